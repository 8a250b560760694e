package gateway

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/hostgrant"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// Admin host grants reach the host's admin handler only where the host
// allows it, only for list and end, and only signed as admin grants by
// the gateway's key for this host; a user's grant never does.
func TestTableAdmin(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	var served string // which table's entry ran
	entries := func(who string) []optable.Entry {
		return []optable.Entry{
			optable.Plain(msg.OpPtyList, func(msg.PtyList) (msg.PtyListReply, error) {
				served = who + msg.OpPtyList
				return msg.PtyListReply{}, nil
			}),
			optable.Plain(msg.OpPtyDrop, func(msg.PtyDrop) (msg.PtyDropReply, error) {
				served = who + msg.OpPtyDrop
				return msg.PtyDropReply{}, nil
			}),
			optable.Plain(msg.OpPtyGet, func(msg.PtyGet) (msg.PtyGetReply, error) {
				served = who + msg.OpPtyGet
				return msg.PtyGetReply{}, nil
			}),
			optable.Plain(msg.OpPtyShare, func(msg.PtyShare) (msg.PtyShareReply, error) {
				served = who + msg.OpPtyShare
				return msg.PtyShareReply{}, nil
			}),
		}
	}
	web := &optable.Table{Protocol: msg.ProtoWebToPtyStore, Ops: entries("web ")}
	admin := &optable.Table{Protocol: msg.ProtoAdminToPtyStore, Ops: entries("admin ")}
	// As ptystore's: the admin's list reads no arguments.
	admin.Ops[0] = optable.Plain(msg.OpPtyList, func(optable.None) (msg.PtyListReply, error) {
		served = "admin " + msg.OpPtyList
		return msg.PtyListReply{}, nil
	})
	adminGrant := func(host string) *msg.HostGrant {
		g, err := hostgrant.SignAdmin(priv, "root", host, now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return &g
	}
	userGrant, _ := hostgrant.Sign(priv, "alice", nil, "web1", now, time.Minute)
	flipped := userGrant
	flipped.Admin = true
	for _, c := range []struct {
		name      string
		allow     bool // the host's --gateway-admin
		op        string
		hg        *msg.HostGrant
		wantCode  string
		wantServe string
	}{
		{"list, host allows", true, msg.OpPtyList, adminGrant("web1"), "", "admin " + msg.OpPtyList},
		{"end, host allows", true, msg.OpPtyDrop, adminGrant("web1"), "", "admin " + msg.OpPtyDrop},
		{"list, host does not allow", false, msg.OpPtyList, adminGrant("web1"), rpc.CodeForbidden, ""},
		{"attach as admin", true, msg.OpPtyGet, adminGrant("web1"), rpc.CodeForbidden, ""},
		{"share as admin", true, msg.OpPtyShare, adminGrant("web1"), rpc.CodeForbidden, ""},
		{"admin grant for another host", true, msg.OpPtyList, adminGrant("web2"), msg.CodeBadGrant, ""},
		{"a user's grant made admin", true, msg.OpPtyList, &flipped, msg.CodeBadGrant, ""},
		{"a user's grant lists their own", true, msg.OpPtyList, &userGrant, "", "web " + msg.OpPtyList},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &Adapter{Host: "web1", Gateway: pub, GrantKey: grant.NewKey(), Ops: PtyStoreOps, Now: func() time.Time { return now }}
			if c.allow {
				a.Admin = admin
			}
			served = ""
			tb := a.Table(msg.ProtoGatewayToPtyStore, web)
			_, err := tb.Handle(context.Background(), gatewayCall(t, c.op, c.hg, mustMarshal(t, msg.PtyList{})))
			if got := rpc.CodeOf(err); got != c.wantCode {
				t.Fatalf("code %q (%v), want %q", got, err, c.wantCode)
			}
			if served != c.wantServe {
				t.Fatalf("served by %q, want %q", served, c.wantServe)
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gatewayCall is a call on a gateway protocol: op with hg and the inner
// args, as the fleet helper sends it.
func gatewayCall(t *testing.T, op string, hg *msg.HostGrant, args []byte) *rpc.Call {
	t.Helper()
	ga := mustMarshal(t, msg.GatewayArgs{HostGrant: hg, Args: args})
	return &rpc.Call{Body: mustMarshal(t, msg.Request{Op: op, Args: ga})}
}
