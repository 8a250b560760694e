package gateway

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/hostgrant"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// TestTable drives the adapter with the host's real grant check behind it:
// the inner handler verifies the grant it is given with the host's key,
// as policy and ptystore do.
func TestTable(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, hostPriv, _ := ed25519.GenerateKey(nil) // a compromised host's own key
	hostKey := grant.NewKey()
	now := time.Now()
	a := &Adapter{Host: "web1", Gateway: pub, GrantKey: hostKey, Ops: PolicyOps, Now: func() time.Time { return now }}
	var seen msg.AllowedTargets
	web := &optable.Table{Protocol: msg.ProtoWebToPolicy, Ops: []optable.Entry{
		optable.Plain(msg.OpAllowedTargets, func(a msg.AllowedTargets) (string, error) {
			seen = a
			if err := grant.Verify(hostKey, a.Grant, now); err != nil {
				return "", rpc.Errorf(msg.CodeBadGrant, "%v", err)
			}
			return "ok", nil
		}),
		// Served to the frontend, not on the gateway protocol.
		optable.Plain(msg.OpAuditScope, func(a msg.AuditScope) (string, error) {
			seen.Grant = a.Grant
			return "ok", nil
		}),
	}}
	tb := a.Table(msg.ProtoGatewayToPolicy, web)
	h := tb.Handle
	sign := func(k ed25519.PrivateKey, host string, issued time.Time) *msg.HostGrant {
		g, err := hostgrant.Sign(k, "alice", nil, host, issued, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return &g
	}
	// A grant of the host's key smuggled in the args is replaced, never used.
	smuggled, _ := grant.Sign(hostKey, "root", now, time.Hour)
	innerArgs, _ := msgpack.Marshal(msg.AllowedTargets{Grant: smuggled})
	for _, c := range []struct {
		name     string
		op       string
		hg       *msg.HostGrant
		wantCode string
	}{
		{"good", msg.OpAllowedTargets, sign(priv, "web1", now), ""},
		{"for another host", msg.OpAllowedTargets, sign(priv, "web2", now), msg.CodeBadGrant},
		{"signed by a host", msg.OpAllowedTargets, sign(hostPriv, "web1", now), msg.CodeBadGrant},
		{"expired", msg.OpAllowedTargets, sign(priv, "web1", now.Add(-2*time.Minute)), msg.CodeBadGrant},
		{"none", msg.OpAllowedTargets, nil, msg.CodeBadGrant},
		{"op not served", msg.OpAuditScope, sign(priv, "web1", now), rpc.CodeBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen = msg.AllowedTargets{}
			call := gatewayCall(t, c.op, c.hg, innerArgs)
			_, err := h(context.Background(), call)
			if got := rpc.CodeOf(err); got != c.wantCode {
				t.Fatalf("code %q (%v), want %q", got, err, c.wantCode)
			}
			if c.wantCode == "" && seen.Grant.User != "alice" {
				t.Fatalf("inner saw grant for %q, want alice", seen.Grant.User)
			}
			// The call's log line names the host and the fleet user.
			if c.wantCode == "" && fmt.Sprint(call.Attrs) != "[host=web1 fleet_user=alice]" {
				t.Errorf("call line attrs %v, want host and fleet user", call.Attrs)
			}
			if c.wantCode != "" && seen.Grant.User != "" {
				t.Fatalf("inner handler reached with %q", seen.Grant.User)
			}
		})
	}
}
