package rpc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/rpc"
	"sluice/rpc/rpctest"
)

// dialAs connects to path with euid and egid uid and no supplementary
// groups, on a thread of its own (at the system call these are per
// thread), which is what SO_PEERCRED and SO_PEERGROUPS record.
func dialAs(t *testing.T, path string, uid int) *net.UnixConn {
	t.Helper()
	type res struct {
		c   *net.UnixConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// Never unlocked: the thread goes away with the goroutine
		// instead of serving others under another uid.
		runtime.LockOSThread()
		// The raw call: unix.Setresuid is syscall's, which changes
		// every thread of the process.
		for _, c := range [][4]uintptr{
			{unix.SYS_SETGROUPS, 0, 0, 0},
			{unix.SYS_SETRESGID, ^uintptr(0), uintptr(uid), ^uintptr(0)},
			{unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)},
		} {
			if _, _, e := unix.RawSyscall(c[0], c[1], c[2], c[3]); e != 0 {
				ch <- res{err: e}
				return
			}
		}
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		ch <- res{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("dial as uid %d: %v", uid, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// TestReservedConns: another uid holding every shared slot leaves the
// reserved peers' slots free (a compromised frontend filling ptystore
// cannot make policy's pty-put busy), and the shared pool still turns
// away the one over its size. Without the reservation the reserved
// peer's call is busy.
func TestReservedConns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to connect as another uid (CI runs as root)")
	}
	const other = 65534
	for _, tc := range []struct {
		name     string
		reserved rpc.Allow
		wantBusy bool
	}{
		{"reserved", rpc.Allow{UIDs: []uint32{0}}, false},
		{"by group", rpc.Allow{GIDs: []uint32{0}}, false},
		{"none", rpc.Allow{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "sluice-gate-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			os.Chmod(dir, 0o755)
			path := filepath.Join(dir, "s.sock")
			r := rpctest.Route("gate", rpc.Allow{UIDs: []uint32{0, other}}, 0, func(context.Context, *rpc.Call) (rpc.Reply, error) {
				return rpc.Reply{}, nil
			})
			srv := &rpc.Server{Name: "gate", Routes: []rpc.Route{r}, MaxConns: 2, Reserved: tc.reserved, ReservedConns: 1, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			l, err := rpc.Listen(path, 0o666)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, l) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			})

			// The other uid holds both shared slots; its third is busy.
			dialAs(t, path, other)
			dialAs(t, path, other)
			time.Sleep(50 * time.Millisecond)
			third := dialAs(t, path, other)
			third.SetReadDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 64)
			n, _ := third.Read(b)
			if !strings.Contains(string(b[:n]), "busy") {
				t.Fatalf("the third connection of the other uid: %q, want busy", b[:n])
			}

			cl := rpctest.Client(path, r)
			_, err = cl.Call(context.Background(), struct{}{}, nil, nil)
			if busy := errors.Is(err, rpc.ErrBusy); busy != tc.wantBusy || (!busy && err != nil) {
				t.Fatalf("root's call with the shared pool full: %v, want busy %v", err, tc.wantBusy)
			}
		})
	}
}
