// Package fuzz holds fuzz targets for the parsers and verifiers that take
// input from a caller and live in packages of their own: the grant
// verifier, the sealed ceremony state, and the policy file. (The wire
// protocol's targets are beside it in rpc and msg.) scripts/fuzz.sh runs
// them with the rest.
package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"lukechampine.com/blake3"

	"sluice/helpers/auth/seal"
	"sluice/helpers/policy"
	"sluice/internal/grant"
	"sluice/msg"
)

var (
	grantKey = grant.Key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	epoch    = time.UnixMilli(1_800_000_000_000)
)

// grantMAC recomputes a grant's MAC from package grant's documented
// encoding (context, user, nonce length-prefixed; times as 8 bytes), an
// oracle independent of grant's own code.
func grantMAC(g msg.Grant) []byte {
	be := func(b []byte, v []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...)
	}
	var buf []byte
	buf = be(buf, []byte("sluice 2026-11-24 grant v2"))
	buf = be(buf, []byte(g.User))
	buf = be(buf, g.Credential)
	buf = binary.BigEndian.AppendUint64(buf, uint64(g.Issued))
	buf = binary.BigEndian.AppendUint64(buf, uint64(g.Expires))
	buf = be(buf, g.Nonce)
	h := blake3.New(grant.MACSize, grantKey[:])
	h.Write(buf)
	return h.Sum(nil)
}

func authenticGrant(g msg.Grant) bool {
	return g.User != "" && len(g.User) <= grant.MaxUser && len(g.Nonce) == grant.NonceSize &&
		len(g.MAC) == grant.MACSize && bytes.Equal(g.MAC, grantMAC(g))
}

// FuzzGrantVerify: Verify accepts exactly the grants whose MAC the
// documented encoding gives, and only while they are valid; only an
// authentic grant is ever reported as expired or early.
func FuzzGrantVerify(f *testing.F) {
	signed, err := grant.Sign(grantKey, "alice", epoch, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	if !authenticGrant(signed) {
		f.Fatal("the MAC oracle disagrees with grant.Sign")
	}
	f.Add(signed.User, signed.Issued, signed.Expires, signed.Nonce, signed.MAC, epoch.UnixMilli())
	f.Add(signed.User, signed.Issued, signed.Expires, signed.Nonce, signed.MAC, signed.Expires)
	f.Add(signed.User, signed.Issued, signed.Expires, signed.Nonce, signed.MAC, signed.Issued-time.Hour.Milliseconds())
	f.Add("bob", signed.Issued, signed.Expires, signed.Nonce, signed.MAC, epoch.UnixMilli())
	f.Add("", int64(0), int64(0), []byte(nil), []byte(nil), int64(0))
	f.Add(strings.Repeat("u", 300), int64(-1), int64(1)<<62, make([]byte, 16), make([]byte, 32), int64(1))
	f.Fuzz(func(t *testing.T, user string, issued, expires int64, nonce, mac []byte, now int64) {
		g := msg.Grant{User: user, Issued: issued, Expires: expires, Nonce: nonce, MAC: mac}
		err := grant.Verify(grantKey, g, time.UnixMilli(now))
		authentic := authenticGrant(g)
		switch {
		case err == nil && !authentic:
			t.Fatalf("forged grant accepted: %+v", g)
		case errors.Is(err, grant.ErrForged):
			if authentic {
				t.Fatalf("an authentic grant called forged: %+v", g)
			}
		case errors.Is(err, grant.ErrExpired), errors.Is(err, grant.ErrNotYetValid):
			if !authentic {
				t.Fatalf("a forged grant's times were looked at: %v", err)
			}
		case err != nil:
			t.Fatalf("unexpected error %v", err)
		}
		if authentic {
			valid := expires > issued && issued <= now+grant.MaxSkew.Milliseconds() && now < expires
			if (err == nil) != valid {
				t.Fatalf("authentic grant at %d (issued %d, expires %d): %v", now, issued, expires, err)
			}
		}
	})
}

// sealKey and openBox are an oracle for package seal, from its documented
// layout (version, expiry in ms, 24-byte nonce, XChaCha20-Poly1305 box;
// the additional data binds context, kind and header).
var sealKey = bytes.Repeat([]byte{7}, seal.KeySize)

func openBox(kind string, box []byte) (payload []byte, expires int64, ok bool) {
	aead, err := chacha20poly1305.NewX(sealKey)
	if err != nil {
		panic(err)
	}
	ns := aead.NonceSize()
	if len(box) < 9+ns+aead.Overhead() || box[0] != 1 {
		return nil, 0, false
	}
	ad := []byte("sluice 2026-11-24 auth ceremony state v1\x00")
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(kind)))
	ad = append(append(ad, kind...), box[:9]...)
	payload, err = aead.Open(nil, box[9:9+ns], box[9+ns:], ad)
	if err != nil {
		return nil, 0, false
	}
	return payload, int64(binary.BigEndian.Uint64(box[1:9])), true
}

// FuzzSealOpen: Open accepts exactly the boxes that authenticate for their
// kind, and only before they expire; everything else is ErrInvalid, and a
// box is reported expired only when it is authentic.
func FuzzSealOpen(f *testing.F) {
	s, err := seal.New(sealKey)
	if err != nil {
		f.Fatal(err)
	}
	login := s.Seal("login", []byte("challenge state"), epoch.Add(time.Minute))
	if _, _, ok := openBox("login", login); !ok {
		f.Fatal("the box oracle disagrees with seal.Seal")
	}
	reg := s.Seal("register", []byte(`{"user":"alice"}`), epoch.Add(time.Minute))
	f.Add(login, "login", epoch.UnixMilli())
	f.Add(login, "register", epoch.UnixMilli())
	f.Add(reg, "register", epoch.Add(time.Hour).UnixMilli())
	f.Add([]byte{1}, "login", int64(0))
	f.Add([]byte(nil), "", int64(0))
	f.Fuzz(func(t *testing.T, box []byte, kind string, now int64) {
		payload, exp, err := s.Open(kind, box, time.UnixMilli(now))
		want, wantExp, authentic := openBox(kind, box)
		switch {
		case err == nil:
			if !authentic || !bytes.Equal(payload, want) || exp.UnixMilli() != wantExp || now >= wantExp {
				t.Fatalf("opened a box that is not authentic or not valid: %x kind %q", box, kind)
			}
		case errors.Is(err, seal.ErrExpired):
			if !authentic || now < wantExp {
				t.Fatalf("expired reported for box %x kind %q at %d", box, kind, now)
			}
		case errors.Is(err, seal.ErrInvalid):
			if authentic {
				t.Fatalf("an authentic box for %q refused", kind)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// ruleLine is a rule as written in a file, without its location.
func ruleLine(r policy.Rule) string {
	s := r.String()
	return s[:strings.LastIndex(s, " (")]
}

// FuzzPolicyParse: any text parses or fails with a line-numbered error,
// never a panic; what parses writes back out (groups, then rules) to a
// file that parses to the same policy, and decides the same.
func FuzzPolicyParse(f *testing.F) {
	for _, s := range []string{
		"", "# nothing\n",
		"deny  mallory as * on *\nallow alice as alice on .host\nallow %ops as root on web1\nallow * as = on .host\n",
		"group ops alice bob\nallow %ops as root on web1 command /usr/bin/systemctl status nginx\n",
		"allow alice as root on .host command /bin/true\n",
		"allow alice as root\n", "group\n", "allow a as b on c command\n", "allow\ta\tas\tb\ton\tc\r\n",
		"bogus line\n", strings.Repeat("a", 5000) + "\n", "allow alice as root on .host\x00\n",
	} {
		f.Add(s)
	}
	reqs := []policy.Request{
		{User: "alice", UnixUser: "alice", Machine: msg.HostMachine},
		{User: "alice", UnixUser: "root", Machine: msg.HostMachine, Args: []string{"/bin/true"}},
		{User: "bob", UnixUser: "root", Machine: "web1"},
		{User: "mallory", UnixUser: "mallory", Machine: msg.HostMachine},
	}
	f.Fuzz(func(t *testing.T, text string) {
		p, err := policy.Parse(strings.NewReader(text), "fuzz")
		if err != nil {
			var pe *policy.ParseError
			if errors.As(err, &pe) && (pe.Line < 1 || pe.File != "fuzz") {
				t.Fatalf("parse error without a line: %v", err)
			}
			return
		}
		var out strings.Builder
		for _, name := range slices.Sorted(maps.Keys(p.Groups)) {
			out.WriteString("group " + name + " " + strings.Join(p.Groups[name], " ") + "\n")
		}
		for _, r := range p.Rules {
			out.WriteString(ruleLine(r) + "\n")
		}
		p2, err := policy.Parse(strings.NewReader(out.String()), "fuzz")
		if err != nil {
			t.Fatalf("policy written back does not parse: %v\n%s", err, out.String())
		}
		if len(p2.Rules) != len(p.Rules) || !maps.EqualFunc(p.Groups, p2.Groups, slices.Equal) {
			t.Fatalf("round trip changed the policy:\n%q\n%s", text, out.String())
		}
		for i := range p.Rules {
			if ruleLine(p.Rules[i]) != ruleLine(p2.Rules[i]) {
				t.Fatalf("rule %d: %q became %q", i, ruleLine(p.Rules[i]), ruleLine(p2.Rules[i]))
			}
		}
		for _, r := range reqs {
			d1, d2 := p.Decide(r), p2.Decide(r)
			if d1.Allow != d2.Allow || d1.Reason != d2.Reason {
				t.Fatalf("%+v decided %+v, then %+v after the round trip", r, d1, d2)
			}
			if d1.Allow && d1.Rule == nil {
				t.Fatalf("%+v allowed by no rule", r)
			}
		}
	})
}
