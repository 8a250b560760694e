package ptystore

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/msg"
	"sluice/rpc"
)

// recorderUID stands for the recording helper's dynamic uid: not the
// test's, so a socket pair the test (the frontend) makes is not one.
const recorderUID = 4242

// socketPairAs makes a stream socket pair with euid uid on a thread of
// its own, as a recorder of that uid would (SO_PEERCRED records the
// creator's credentials): setresuid on that thread only (the raw
// syscall; Go's own would change every thread), which then exits.
func socketPairAs(t *testing.T, uid int) (mine, theirs *os.File) {
	t.Helper()
	type pair struct {
		fds [2]int
		err error
	}
	done := make(chan pair)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			done <- pair{err: e}
			return
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		done <- pair{fds: [2]int(fds), err: err}
	}()
	p := <-done
	if p.err != nil {
		t.Fatalf("socket pair as uid %d: %v", uid, p.err)
	}
	mine, theirs = os.NewFile(uintptr(p.fds[0]), "mine"), os.NewFile(uintptr(p.fds[1]), "theirs")
	t.Cleanup(func() { mine.Close() })
	return mine, theirs
}

// Attack: the frontend (a compromised one: the web socket's uid) puts a
// stream socket it made itself as a recorded session. Ending a recorded
// session waits for the socket's other end to close, which the frontend
// holds, or which nobody ever closes (a listening socket, held by ptystore
// alone, even across restarts through the fd store): every drop of it,
// sluicectl's, the limits' and the policy recheck's, waited out its
// deadline and failed, and the session stayed held for good, its slot
// taken. Only a socket pair made by the recording helper is a session.
func TestPutSocketNotFromRecorder(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: a socket pair made as the recorder's uid")
	}
	h := newHarness(t, Config{
		Hangup:    func(context.Context, *os.File) error { return nil },
		Recorders: &rpc.Allow{UIDs: []uint32{recorderUID}},
	})
	listener := func(t *testing.T) *os.File {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := listenAbstract(fd); err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), "listener")
	}
	unconnected := func(t *testing.T) *os.File {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), "unconnected")
	}
	ownPair := func(t *testing.T) *os.File {
		mine, theirs := socketPairAs(t, os.Getuid())
		_ = mine // held by the frontend: it never closes
		return theirs
	}
	recorderListener := func(t *testing.T) *os.File {
		type res struct {
			fd  int
			err error
		}
		done := make(chan res)
		go func() {
			runtime.LockOSThread()
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), recorderUID, ^uintptr(0)); e != 0 {
				done <- res{err: e}
				return
			}
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = listenAbstract(fd)
			}
			done <- res{fd, err}
		}()
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		return os.NewFile(uintptr(r.fd), "recorder-listener")
	}
	var recorderEnd *os.File
	for i, tc := range []struct {
		name string
		fd   func(*testing.T) *os.File
		ok   bool
	}{
		{"the frontend's own socket pair", ownPair, false},
		{"a listening socket", listener, false},
		{"an unconnected socket", unconnected, false},
		{"a listening socket of the recorder's uid", recorderListener, false},
		{"the recorder's socket pair", func(t *testing.T) *os.File {
			mine, theirs := socketPairAs(t, recorderUID)
			recorderEnd = mine
			return theirs
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "s" + string(rune('a'+i))
			f := tc.fd(t)
			var rep msg.PtyPutReply
			_, code := call(t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant("alice"), Session: sessionInfo(id, "alice"), Ticket: tk(t, h.key, sessionInfo(id, "alice"), f)}, []*os.File{f}, &rep)
			f.Close()
			if !tc.ok {
				if code != rpc.CodeBadRequest {
					// What the session costs once held: no drop ends it.
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					defer cancel()
					err := h.store.Drop(ctx, id, nil)
					t.Fatalf("put = %q, want bad-request; then an admin's drop = %v, %d held", code, err, h.store.Len())
				}
				if h.store.Len() != 0 {
					t.Fatalf("%d sessions held after a refused put", h.store.Len())
				}
				return
			}
			if code != "" || h.store.Len() != 1 {
				t.Fatalf("put = %q, %d held", code, h.store.Len())
			}
			recorderEnd.Close() // the recorder ends the session
			h.waitDrop(id + " shell exited")
		})
	}
}

// listenAbstract binds fd to a fresh abstract name and listens.
func listenAbstract(fd int) error {
	name := fmt.Sprintf("@sluice-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		return err
	}
	return unix.Listen(fd, 1)
}
