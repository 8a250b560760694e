// Package rpctest starts an in-process rpc.Server on a real socket for a
// test, as wireguard-go's conn/bindtest does for its bind: a handler's
// test gets the whole wire (handshake, kernel credentials, frames, fds)
// without building a helper binary.
package rpctest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/msg"
	"sluice/rpc"
)

// Hellos are the intent lines of protocol name (a msg.Proto* constant)
// with made-up build IDs: the server and its test client agree on them,
// which is all rpc asks. An unknown name fails nothing here; its intent
// just matches no helper's.
func Hellos(name string) (client, server rpc.Hello) {
	p, ok := msg.Lookup(name)
	if !ok {
		p = msg.Protocol{Name: name}
	}
	return rpc.Hello{Intent: msg.Intent(p, "client"), BuildID: strings.Repeat("c", 64)},
		rpc.Hello{Intent: msg.Intent(p, "server"), BuildID: strings.Repeat("5", 64)}
}

// Me admits the test process's own uid, the caller of every test client.
func Me() rpc.Allow { return rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}} }

// Route is a route for protocol name with Hellos' lines.
func Route(name string, allow rpc.Allow, maxFDs int, h rpc.HandlerFunc) rpc.Route {
	c, s := Hellos(name)
	return rpc.Route{Client: c, Server: s, Allow: allow, MaxFDs: maxFDs, Handle: h}
}

// Client is a client at path that speaks r's client side and expects its
// server side.
func Client(path string, r rpc.Route) *rpc.Client {
	return &rpc.Client{Path: path, Hello: r.Client, Expect: r.Server}
}

// Serve serves s on a new socket (rpc.Listen) at path, or at s.sock in a
// new temporary directory when path is "", with mode (0: 0600), until the
// test ends; a Serve that returns an error fails the test then. It returns
// the socket's path.
func Serve(t testing.TB, s *rpc.Server, path string, mode os.FileMode) string {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "s.sock")
	}
	if mode == 0 {
		mode = 0o600
	}
	l, err := rpc.Listen(path, mode)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("rpctest: serve %s: %v", path, err)
		}
	})
	return path
}
