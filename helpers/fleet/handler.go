package fleet

import (
	"context"
	"os"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/names"
	"sluice/msg"
	"sluice/rpc"
)

// Web serves "web to fleet": the hosts, one call to a host's helper, and
// opening or attaching a session on one. The frontend's word about the
// user counts for nothing here: the host grant, which only auth can sign
// and only the host checks, is the authority, so this helper checks
// shapes only.
func (f *Fleet) Web(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := c.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	switch req.Op {
	case msg.OpFleetHosts:
		return f.hosts()
	case msg.OpFleetCall, msg.OpFleetOpen:
		var a msg.FleetCall
		if err := (&rpc.Call{Body: req.Args}).Decode(&a); err != nil {
			return rpc.Reply{}, err
		}
		if !names.Machine(a.Host) || a.Host == msg.HostMachine {
			return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "invalid host %q", a.Host)
		}
		if req.Op == msg.OpFleetOpen {
			out, master, err := f.Open(ctx, a)
			if err != nil {
				return rpc.Reply{}, err
			}
			return rpc.Reply{Body: out, FDs: []*os.File{master}}, nil
		}
		switch a.Op {
		case msg.OpCreateShellSession, msg.OpPtyGet, msg.OpPtyPut:
			// Their pty would be closed at the relay: streaming only.
			return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "%s goes through %s", a.Op, msg.OpFleetOpen)
		}
		if a.Service != msg.Policy && a.Service != msg.PtyStore {
			return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "no service %q on a host", a.Service)
		}
		payload, err := f.Call(ctx, a)
		if err != nil {
			return rpc.Reply{}, err
		}
		return rpc.Reply{Body: msgpack.RawMessage(payload)}, nil
	}
	c.Label = "unknown"
	return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
}

// Admin serves "admin to fleet": the hosts, and checking one.
func (f *Fleet) Admin(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	var req msg.Request
	if err := c.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	switch req.Op {
	case msg.OpFleetHosts:
		return f.hosts()
	case msg.OpFleetCheck:
		var a msg.FleetCheck
		if err := (&rpc.Call{Body: req.Args}).Decode(&a); err != nil {
			return rpc.Reply{}, err
		}
		rep, err := f.Check(ctx, a.Host)
		if err != nil {
			return rpc.Reply{}, err
		}
		return rpc.Reply{Body: rep}, nil
	}
	c.Label = "unknown"
	return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
}

func (f *Fleet) hosts() (rpc.Reply, error) {
	hs, err := LoadHosts(f.Dir)
	if err != nil {
		return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "%v", err)
	}
	if hs.Hosts == nil {
		hs.Hosts = []msg.FleetHost{}
	}
	return rpc.Reply{Body: msg.FleetHostsReply{Hosts: hs.Hosts}}, nil
}
