package ticket

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/pty"
	"sluice/internal/termsock"
	"sluice/msg"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func TestVerify(t *testing.T) {
	key := grant.NewKey()
	info := msg.SessionInfo{ID: "s1", Owner: "alice", UnixUser: "root", Machine: msg.HostMachine, Created: t0.UnixMilli(), PID: 42}
	fd := FD{Kind: KindPTY, Dev: 27, Num: 3}
	tk, err := Sign(key, info, fd, t0.Add(Lifetime))
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(*msg.SessionInfo)) msg.SessionInfo { i := info; f(&i); return i }
	tests := []struct {
		name string
		key  grant.Key
		info msg.SessionInfo
		fd   FD
		tk   msg.SessionTicket
		now  time.Time
		want error
	}{
		{"as signed", key, info, fd, tk, t0, nil},
		{"just before expiry", key, info, fd, tk, t0.Add(Lifetime - time.Millisecond), nil},
		{"sharing is not covered", key, with(func(i *msg.SessionInfo) { i.Sharing = msg.ShareReadWrite }), fd, tk, t0, nil},
		{"at expiry", key, info, fd, tk, t0.Add(Lifetime), ErrExpired},
		{"other id", key, with(func(i *msg.SessionInfo) { i.ID = "s2" }), fd, tk, t0, ErrForged},
		{"other owner", key, with(func(i *msg.SessionInfo) { i.Owner = "bob" }), fd, tk, t0, ErrForged},
		{"other unix user", key, with(func(i *msg.SessionInfo) { i.UnixUser = "alice" }), fd, tk, t0, ErrForged},
		{"other machine", key, with(func(i *msg.SessionInfo) { i.Machine = "box" }), fd, tk, t0, ErrForged},
		{"other created", key, with(func(i *msg.SessionInfo) { i.Created++ }), fd, tk, t0, ErrForged},
		{"other pid", key, with(func(i *msg.SessionInfo) { i.PID = 1 }), fd, tk, t0, ErrForged},
		{"wrong kind", key, info, FD{Kind: KindSocket, Dev: fd.Dev, Num: fd.Num}, tk, t0, ErrForged},
		{"other pts", key, info, FD{Kind: KindPTY, Dev: fd.Dev, Num: 4}, tk, t0, ErrForged},
		{"other devpts", key, info, FD{Kind: KindPTY, Dev: 28, Num: fd.Num}, tk, t0, ErrForged},
		{"expiry moved", key, info, fd, msg.SessionTicket{Expires: tk.Expires + 1000, MAC: tk.MAC}, t0, ErrForged},
		{"expiry moved after it passed", key, info, fd, msg.SessionTicket{Expires: tk.Expires + 1000, MAC: tk.MAC}, t0.Add(Lifetime), ErrForged},
		{"flipped mac", key, info, fd, msg.SessionTicket{Expires: tk.Expires, MAC: flip(tk.MAC)}, t0, ErrForged},
		{"short mac", key, info, fd, msg.SessionTicket{Expires: tk.Expires, MAC: tk.MAC[:31]}, t0, ErrForged},
		{"missing", key, info, fd, msg.SessionTicket{}, t0, ErrMissing},
		{"other key", grant.NewKey(), info, fd, tk, t0, ErrForged},
		{"zero key", grant.Key{}, info, fd, tk, t0, ErrNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.key, tt.info, tt.fd, tt.tk, tt.now)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := Sign(grant.Key{}, info, fd, t0); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Sign with the zero key = %v, want ErrNoKey", err)
	}
}

func flip(b []byte) []byte {
	c := bytes.Clone(b)
	c[0] ^= 1
	return c
}

// Identify answers from the kernel: two ptys differ, a master and its
// dup do not, a socket is a socket, and a slave is refused.
func TestIdentify(t *testing.T) {
	m1, s1, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Close()
	defer s1.Close()
	m2, s2, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	defer s2.Close()
	a, b, err := termsock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()

	id1, err := Identify(m1)
	if err != nil || id1.Kind != KindPTY {
		t.Fatalf("Identify(master) = %+v, %v", id1, err)
	}
	id2, err := Identify(m2)
	if err != nil || id2 == id1 {
		t.Fatalf("Identify(other master) = %+v, %v; first was %+v", id2, err, id1)
	}
	ida, err := Identify(a)
	if err != nil || ida.Kind != KindSocket {
		t.Fatalf("Identify(socket) = %+v, %v", ida, err)
	}
	idb, err := Identify(b)
	if err != nil || idb == ida {
		t.Fatalf("Identify(other end) = %+v, %v; first was %+v", idb, err, ida)
	}
	if id, err := Identify(s1); err == nil {
		t.Fatalf("Identify(slave) = %+v, want an error", id)
	}
}
