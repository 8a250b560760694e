package rpc

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestListenLeavesALiveSocket: Listen dials what is at its path first. A
// socket a server answers on, and a file that is no socket, stay as they
// are (ErrInUse); a socket file whose server is gone is replaced.
func TestListenLeavesALiveSocket(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string) (after func(t *testing.T))
		wantErr error
	}{
		{"nothing there", func(t *testing.T, path string) func(*testing.T) { return nil }, nil},
		{"a live server's socket", func(t *testing.T, path string) func(*testing.T) {
			ts := startServerAt(t, path)
			return func(t *testing.T) {
				// The running server still has its socket and answers.
				var rep echoRep
				if _, err := ts.client().Call(context.Background(), echoReq{Text: "still here"}, nil, &rep); err != nil || rep.Text != "still here" {
					t.Fatalf("the first server after a second Listen: %+v, %v", rep, err)
				}
			}
		}, ErrInUse},
		{"a stale socket file", func(t *testing.T, path string) func(*testing.T) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
			if _, err := os.Lstat(path); err != nil {
				t.Fatalf("the stale socket file is gone before the test: %v", err)
			}
			return nil
		}, nil},
		{"a regular file", func(t *testing.T, path string) func(*testing.T) {
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
					t.Fatalf("the file after Listen: %q, %v", b, err)
				}
			}
		}, ErrInUse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			after := tc.prepare(t, path)
			l, err := Listen(path, 0o600)
			if l != nil {
				defer l.Close()
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Listen: %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				// The new socket is the one that answers.
				ts := serveOn(t, path, l)
				var rep echoRep
				if _, err := ts.client().Call(context.Background(), echoReq{Text: "new"}, nil, &rep); err != nil || rep.Text != "new" {
					t.Fatalf("call on the new socket: %+v, %v", rep, err)
				}
			}
			if after != nil {
				after(t)
			}
		})
	}
}
