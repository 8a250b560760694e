package hostgrant

import (
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"sluice/msg"
)

func TestVerify(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	otherPub, otherPriv, _ := ed25519.GenerateKey(nil)
	_ = otherPub
	pub := priv.Public().(ed25519.PublicKey)
	now := time.Now()
	good, err := Sign(priv, "alice", []byte{1, 2}, "web1", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	forgedByHost, _ := Sign(otherPriv, "alice", nil, "web2", now, time.Minute)
	tooLong := good
	tooLong.Expires = now.Add(time.Hour).UnixMilli()
	tooLong.Sig = ed25519.Sign(priv, message(tooLong))
	for _, c := range []struct {
		name string
		g    msg.HostGrant
		host string
		at   time.Time
		want error
	}{
		{"good", good, "web1", now, nil},
		{"other host", good, "web2", now, ErrWrongHost},
		{"expired", good, "web1", now.Add(61 * time.Second), ErrExpired},
		{"from the future", good, "web1", now.Add(-2 * time.Minute), ErrNotYetValid},
		{"user changed", func() msg.HostGrant { g := good; g.User = "root"; return g }(), "web1", now, ErrForged},
		{"host changed", func() msg.HostGrant { g := good; g.Host = "web2"; return g }(), "web2", now, ErrForged},
		{"expiry moved", func() msg.HostGrant { g := good; g.Expires += 1000; return g }(), "web1", now, ErrForged},
		{"another key", forgedByHost, "web2", now, ErrForged},
		{"no signature", func() msg.HostGrant { g := good; g.Sig = nil; return g }(), "web1", now, ErrForged},
		{"signed for too long", tooLong, "web1", now, ErrTooLong},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Verify(pub, c.host, c.g, c.at)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	for _, c := range []struct {
		user, host string
		life       time.Duration
	}{
		{"alice", ".host", time.Minute},
		{"alice", "", time.Minute},
		{"Al ice", "web1", time.Minute},
		{"alice", "web1", time.Hour},
		{"alice", "web1", 0},
	} {
		if _, err := Sign(priv, c.user, nil, c.host, time.Now(), c.life); err == nil {
			t.Errorf("Sign(%q, %q, %v) signed", c.user, c.host, c.life)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	k1, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(p)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("second load: %v, equal %v", err, k1.Equal(k2))
	}
	pub, err := ParsePublic(FormatPublic(k1.Public().(ed25519.PublicKey)))
	if err != nil || !pub.Equal(k1.Public()) {
		t.Fatalf("public round trip: %v", err)
	}
	if _, err := ParsePublic("ssh-ed25519 AAAA"); err == nil {
		t.Fatal("parsed an ssh key as a gateway key")
	}
}
