package rpctest_test

import (
	"context"
	"testing"

	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/rpctest"
)

type echo struct {
	Text string `msgpack:"text"`
}

// TestServe: a route served with rpctest answers its client, with the
// caller's uid as the kernel reports it, and refuses a caller the route's
// Allow does not name.
func TestServe(t *testing.T) {
	var seen uint32
	h := func(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
		var e echo
		if err := c.Decode(&e); err != nil {
			return rpc.Reply{}, err
		}
		seen = c.Peer.UID
		return rpc.Reply{Body: e}, nil
	}
	me := rpctest.Route(msg.ProtoWebToPolicy, rpctest.Me(), 0, h)
	nobody := rpctest.Route(msg.ProtoPtyStoreToPolicy, rpc.Allow{}, 0, h)
	path := rpctest.Serve(t, &rpc.Server{Name: "test", Routes: []rpc.Route{me, nobody}}, "", 0)

	var got echo
	if _, err := rpctest.Client(path, me).Call(context.Background(), echo{"hi"}, nil, &got); err != nil || got.Text != "hi" {
		t.Fatalf("call: %+v, %v", got, err)
	}
	if want := rpctest.Me().UIDs[0]; seen != want {
		t.Fatalf("handler saw uid %d, want %d", seen, want)
	}
	if _, err := rpctest.Client(path, nobody).Call(context.Background(), echo{"hi"}, nil, &got); rpc.CodeOf(err) != rpc.CodeForbidden {
		t.Fatalf("call the route allows no one: %v, want %s", err, rpc.CodeForbidden)
	}
}
