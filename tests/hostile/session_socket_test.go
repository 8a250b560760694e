package hostile

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/msg"
)

// TestSessionSocketForged: the frontend (the web socket's caller, here a
// process of another uid than the recorder's) puts stream sockets of its
// own making as recorded sessions on the real sluice-ptystore. A session
// socket ends only when its recorder closes the other end, so each of
// these would be a session no drop ends: every one is refused, and
// nothing is held. pty-put of a pty master still works (TestGrantsPtystore).
func TestSessionSocketForged(t *testing.T) {
	s := helpers(t)
	ps := targetNamed(t, "ptystore")
	alice := s.grantFor(t, "alice")
	pair := func(t *testing.T) (int, func()) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fds[1], func() { unix.Close(fds[0]); unix.Close(fds[1]) }
	}
	listener := func(t *testing.T) (int, func()) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("@sluice-hostile-%d-%d", os.Getpid(), time.Now().UnixNano())
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 1); err != nil {
			t.Fatal(err)
		}
		return fd, func() { unix.Close(fd) }
	}
	// Connected to a listener ptystore can reach: the peer is whoever
	// listens (here the test itself), not a recorder.
	connected := func(t *testing.T) (int, func()) {
		l, closeL := listener(t)
		sa, err := unix.Getsockname(l)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			t.Fatal(err)
		}
		return fd, func() { unix.Close(fd); closeL() }
	}
	for i, tc := range []struct {
		name string
		fd   func(*testing.T) (int, func())
	}{
		{"its own socket pair", pair},
		{"a listening socket", listener},
		{"a connected socket", connected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, done := tc.fd(t)
			defer done()
			id := fmt.Sprintf("hostile-sock-%d-%d", os.Getpid(), i)
			c, err := Dial(ps.sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			info := msg.SessionInfo{ID: id, Owner: "alice",
				UnixUser: "alice", Machine: msg.HostMachine, Created: time.Now().UnixMilli(), Sharing: msg.SharePrivate}
			// With a good ticket: the socket's maker is what is refused.
			req := request(msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: info, Ticket: s.ticketFor(t, info, fd)})
			if err := c.WriteFDs(Cat(putHello(ps).Lines(), Frame(req)), []int{fd}); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			a := c.ReadAll()
			a.CloseFDs()
			r := a.Parse()
			if r.Kind == OK || !strings.Contains(r.Text, "not made by a recording helper") {
				t.Errorf("put of %s: %v\n%s", tc.name, r, s.logOf(ps.sock))
			}
			lr, _ := ps.call(t, request(msg.OpPtyList, msg.PtyList{Grant: alice}))
			var list msg.PtyListReply
			if lr.Kind != OK || msgpack.Unmarshal(lr.Payload, &list) != nil {
				t.Fatalf("list: %v", lr)
			}
			for _, si := range list.Sessions {
				if si.ID == id {
					t.Fatalf("ptystore holds %s", id)
				}
			}
		})
	}
	ps.mustServeGood(t)
}
