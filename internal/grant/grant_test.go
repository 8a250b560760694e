package grant

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/msg"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func clone(g msg.Grant) msg.Grant {
	g.Nonce = bytes.Clone(g.Nonce)
	g.MAC = bytes.Clone(g.MAC)
	return g
}

func TestVerify(t *testing.T) {
	key := NewKey()
	g, err := Sign(key, "alice", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := NewKey()
	tests := []struct {
		name string
		key  Key
		g    msg.Grant
		now  time.Time
		want error
	}{
		{"fresh", key, g, t0, nil},
		{"just before expiry", key, g, t0.Add(time.Hour - time.Millisecond), nil},
		{"at expiry", key, g, t0.Add(time.Hour), ErrExpired},
		{"long expired", key, g, t0.Add(48 * time.Hour), ErrExpired},
		{"clock a little behind the signer", key, g, t0.Add(-MaxSkew), nil},
		{"issued in the future", key, g, t0.Add(-MaxSkew - time.Millisecond), ErrNotYetValid},
		{"other key", other, g, t0, ErrForged},
		{"other key and expired", other, g, t0.Add(48 * time.Hour), ErrForged},
		{"no mac", key, func() msg.Grant { h := clone(g); h.MAC = nil; return h }(), t0, ErrForged},
		{"short mac", key, func() msg.Grant { h := clone(g); h.MAC = h.MAC[:31]; return h }(), t0, ErrForged},
		{"short nonce", key, func() msg.Grant { h := clone(g); h.Nonce = h.Nonce[:15]; return h }(), t0, ErrForged},
		{"empty user", key, func() msg.Grant { h := clone(g); h.User = ""; return h }(), t0, ErrForged},
		{"other user", key, func() msg.Grant { h := clone(g); h.User = "mallory"; return h }(), t0, ErrForged},
		{"zero grant", key, msg.Grant{}, t0, ErrForged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.key, tt.g, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v, want ok", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

// Every single bit of every field, flipped, must make the grant a forgery
// (never "expired": the MAC is checked before the times are believed).
func TestBitFlipEveryField(t *testing.T) {
	key := NewKey()
	g, err := Sign(key, "alice.b-c_d", t0, DefaultLifetime)
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, what string, h msg.Grant) {
		t.Helper()
		if err := Verify(key, h, t0); !errors.Is(err, ErrForged) {
			t.Fatalf("%s flipped: Verify = %v, want ErrForged", what, err)
		}
	}
	for i := 0; i < len(g.User)*8; i++ {
		h := clone(g)
		u := []byte(h.User)
		u[i/8] ^= 1 << (i % 8)
		h.User = string(u)
		check(t, "user bit", h)
	}
	for i := 0; i < 64; i++ {
		h := clone(g)
		h.Issued ^= 1 << i
		check(t, "issued bit", h)
		h = clone(g)
		h.Expires ^= 1 << i
		check(t, "expires bit", h)
	}
	for i := 0; i < NonceSize*8; i++ {
		h := clone(g)
		h.Nonce[i/8] ^= 1 << (i % 8)
		check(t, "nonce bit", h)
	}
	for i := 0; i < MACSize*8; i++ {
		h := clone(g)
		h.MAC[i/8] ^= 1 << (i % 8)
		check(t, "mac bit", h)
	}
	// Untouched, it still verifies: the flips above were on copies.
	if err := Verify(key, g, t0); err != nil {
		t.Fatal(err)
	}
}

// The encoding is length-prefixed: moving bytes between the user and the
// nonce must not give the same MAC.
func TestCanonicalEncoding(t *testing.T) {
	key := NewKey()
	a := msg.Grant{User: "ab", Issued: 1, Expires: 2, Nonce: bytes.Repeat([]byte{7}, NonceSize)}
	b := msg.Grant{User: "a", Issued: 1, Expires: 2, Nonce: bytes.Repeat([]byte{7}, NonceSize)}
	if bytes.Equal(mac(key, a), mac(key, b)) {
		t.Fatal("different users, same MAC")
	}
	g1, _ := Sign(key, "alice", t0, time.Hour)
	g2, _ := Sign(key, "alice", t0, time.Hour)
	if bytes.Equal(g1.Nonce, g2.Nonce) || bytes.Equal(g1.MAC, g2.MAC) {
		t.Fatal("two grants share a nonce or MAC")
	}
}

func TestSignRefuses(t *testing.T) {
	key := NewKey()
	for _, tt := range []struct {
		user string
		life time.Duration
	}{
		{"", time.Hour},
		{string(make([]byte, MaxUser+1)), time.Hour},
		{"alice", 0},
		{"alice", -time.Second},
	} {
		if _, err := Sign(key, tt.user, t0, tt.life); err == nil {
			t.Errorf("Sign(%d-byte user, %v) succeeded", len(tt.user), tt.life)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grant.key")
	k, err := WriteKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := WriteKeyFile(path); err == nil {
		t.Error("WriteKeyFile overwrote an existing key")
	}
	got, err := LoadKey(path)
	if err != nil || got != k {
		t.Fatalf("LoadKey = %x, %v; want %x", got, err, k)
	}
	hexPath := filepath.Join(dir, "hex.key")
	os.WriteFile(hexPath, []byte(hex.EncodeToString(k[:])+"\n"), 0o600)
	if got, err := LoadKey(hexPath); err != nil || got != k {
		t.Fatalf("LoadKey(hex) = %x, %v; want %x", got, err, k)
	}
	for name, content := range map[string][]byte{
		"short":   make([]byte, 31),
		"long":    make([]byte, 33),
		"zeros":   make([]byte, 32),
		"bad hex": []byte(hex.EncodeToString(k[:])[:62] + "zz"),
	} {
		p := filepath.Join(dir, "bad")
		os.WriteFile(p, content, 0o600)
		if _, err := LoadKey(p); err == nil {
			t.Errorf("LoadKey accepted a %s key", name)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadKey of a missing file succeeded")
	}
}

func BenchmarkVerify(b *testing.B) {
	key := NewKey()
	g, _ := Sign(key, "alice", t0, time.Hour)
	for b.Loop() {
		if err := Verify(key, g, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// The credential a grant names is covered by the MAC: a frontend cannot
// move a grant onto another passkey (one not revoked) or strip the name.
func TestCredentialCovered(t *testing.T) {
	key := NewKey()
	g, err := SignCredential(key, "alice", []byte{1, 2, 3, 4}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(key, g, t0); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, tt := range []struct {
		name string
		cred []byte
	}{
		{"stripped", nil},
		{"other passkey", []byte{1, 2, 3, 5}},
		{"longer", []byte{1, 2, 3, 4, 0}},
		{"too long", make([]byte, MaxCredential+1)},
	} {
		h := clone(g)
		h.Credential = tt.cred
		if err := Verify(key, h, t0); !errors.Is(err, ErrForged) {
			t.Errorf("%s: Verify = %v, want ErrForged", tt.name, err)
		}
	}
	// Bytes moved between the user and the credential change the MAC.
	a := msg.Grant{User: "ab", Credential: []byte("c"), Issued: 1, Expires: 2, Nonce: bytes.Repeat([]byte{7}, NonceSize)}
	b := msg.Grant{User: "a", Credential: []byte("bc"), Issued: 1, Expires: 2, Nonce: bytes.Repeat([]byte{7}, NonceSize)}
	if bytes.Equal(mac(key, a), mac(key, b)) {
		t.Fatal("user and credential not separated in the MAC input")
	}
	if _, err := SignCredential(key, "alice", make([]byte, MaxCredential+1), t0, time.Hour); err == nil {
		t.Fatal("SignCredential took an oversized credential ID")
	}
}
