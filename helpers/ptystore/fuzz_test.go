package ptystore

import (
	"testing"

	"sluice/internal/grant"
	"sluice/msg"
)

// FuzzShareToken: no token a caller makes up passes for a session unless it
// is the very token the owner was given, and none makes the check panic.
func FuzzShareToken(f *testing.F) {
	key := TokenKey(grant.Key{1, 2, 3})
	info := msg.SessionInfo{ID: "s1", Owner: "alice", UnixUser: "alice", Machine: msg.HostMachine, Created: 1, Sharing: msg.ShareReadOnly}
	good, err := makeToken(&key, info, 5)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:6])
	f.Add(append([]byte{1, 2}, good[2:]...))
	f.Fuzz(func(t *testing.T, tok []byte) {
		mode, err := checkToken(&key, tok, info, 5)
		if err == nil && (string(tok) != string(good) || mode != msg.ShareReadOnly) {
			t.Fatalf("token %x accepted as %q", tok, mode)
		}
	})
}

// FuzzFDName: whatever name comes back from an fd store, parsing never
// panics, and what parses is valid and encodes back to the same session.
func FuzzFDName(f *testing.F) {
	info := sessionInfo("s1", "alice")
	info.Sharing = msg.ShareReadWrite
	name, err := fdName(info, 9)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(name)
	f.Add("pty.")
	f.Add("pty.kQ")
	f.Add("sluice-ptystore.socket")
	f.Fuzz(func(t *testing.T, name string) {
		info, epoch, err := parseFDName(name)
		if err != nil {
			return
		}
		if err := validInfo(info); err != nil {
			t.Fatalf("%q parsed to invalid %+v: %v", name, info, err)
		}
		again, err := fdName(info, epoch)
		if err != nil {
			return // valid fields can still be too long together
		}
		back, epoch2, err := parseFDName(again)
		if err != nil || back != info || epoch2 != epoch {
			t.Fatalf("%q: round trip %+v %d -> %+v %d %v", name, info, epoch, back, epoch2, err)
		}
	})
}
