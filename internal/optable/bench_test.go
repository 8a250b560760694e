package optable_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// BenchmarkHandleRatio: a call through the op table (envelope, lookup,
// fd count, strict argument decode, reply) against the hand-written
// dispatch the helpers had (envelope, switch, msgpack.Unmarshal of the
// args), in turns within one run, on policy's allowed-targets shape.
// Reports table/switch as "ratio".
func BenchmarkHandleRatio(b *testing.B) {
	serve := func(_ context.Context, _ *rpc.Call, a msg.AllowedTargets) (msg.AllowedTargetsReply, error) {
		return msg.AllowedTargetsReply{Truncated: a.Grant.User == ""}, nil
	}
	tb := &optable.Table{Protocol: msg.ProtoWebToPolicy, Ops: []optable.Entry{
		optable.OpFDs(msg.OpCreateShellSession, 0, 1, func(context.Context, *rpc.Call, msg.CreateShellSession) (msg.CreateShellSessionReply, []*os.File, error) {
			return msg.CreateShellSessionReply{}, nil, nil
		}),
		optable.Op(msg.OpAuditScope, func(context.Context, *rpc.Call, msg.AuditScope) (msg.AuditScopeReply, error) {
			return msg.AuditScopeReply{}, nil
		}),
		optable.Op(msg.OpAllowedTargets, serve),
	}}
	old := func(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
		var req msg.Request
		if err := c.Decode(&req); err != nil {
			return rpc.Reply{}, err
		}
		c.Label = req.Op
		switch req.Op {
		case msg.OpCreateShellSession, msg.OpAuditScope:
			return rpc.Reply{}, nil
		case msg.OpAllowedTargets:
			var a msg.AllowedTargets
			if err := msgpack.Unmarshal(req.Args, &a); err != nil {
				return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "undecodable %s args: %v", req.Op, err)
			}
			r, err := serve(ctx, c, a)
			return rpc.Reply{Body: r}, err
		}
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "unknown op %q", req.Op)
	}
	args, _ := msgpack.Marshal(msg.AllowedTargets{Grant: msg.Grant{User: "alice", Expires: time.Now().UnixMilli(), MAC: make([]byte, 32)}})
	body, _ := msgpack.Marshal(msg.Request{Op: msg.OpAllowedTargets, Args: args})
	ctx := context.Background()
	var tTable, tOld time.Duration
	const turn = 256
	for done := 0; done < b.N; done += turn {
		start := time.Now()
		for range turn {
			if _, err := tb.Handle(ctx, &rpc.Call{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
		tTable += time.Since(start)
		start = time.Now()
		for range turn {
			if _, err := old(ctx, &rpc.Call{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
		tOld += time.Since(start)
	}
	b.ReportMetric(float64(tTable)/float64(tOld), "ratio")
	b.ReportMetric(float64(tTable.Nanoseconds())/float64(b.N), "table-ns/call")
	b.ReportMetric(float64(tOld.Nanoseconds())/float64(b.N), "switch-ns/call")
}
