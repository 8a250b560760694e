package fleet

import (
	"context"
	"os"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/names"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// Tables is the fleet helper's whole surface.
//
// "web to fleet" (the frontend's uid, from the kernel): the hosts, one
// call to a host's policy or ptystore, and opening or attaching a session
// on one (its pty streams over the ssh channel; the reply's fd is this
// end). The frontend's word about the user counts for nothing here: the
// host grant in the inner arguments, which only auth can sign and only
// the host checks, is the authority, so this helper checks shapes only.
//
// "admin to fleet" (root, the admin group): the hosts, checking one, and
// carrying one admin call to a host's ptystore. The kernel vouched for the
// caller (the route's allowlist: root or the admin group); the host trusts
// the admin host grant only, which gateway auth signs for admins alone, so
// this helper checks shapes and carries.
func (f *Fleet) Tables() []optable.Table {
	return []optable.Table{
		{
			Protocol: msg.ProtoWebToFleet,
			Ops: []optable.Entry{
				optable.Plain(msg.OpFleetHosts, f.hosts),
				optable.Op(msg.OpFleetCall, f.call),
				optable.OpFDs(msg.OpFleetOpen, 0, 1, f.open),
			},
		},
		{
			Protocol: msg.ProtoAdminToFleet,
			Ops: []optable.Entry{
				optable.Plain(msg.OpFleetHosts, f.hosts),
				optable.Op(msg.OpFleetCheck, func(ctx context.Context, _ *rpc.Call, a msg.FleetCheck) (msg.FleetCheckReply, error) {
					return f.Check(ctx, a.Host)
				}),
				optable.Op(msg.OpFleetAdminCall, f.adminCall),
			},
		},
	}
}

// webCall checks what every "web to fleet" call must be: for a host, and
// with a user's host grant.
func webCall(a msg.FleetCall) error {
	if err := validHost(a.Host); err != nil {
		return err
	}
	if a.HostGrant.Admin {
		// Admin grants go from sluicectl over "admin to fleet" only.
		return rpc.Errorf(rpc.CodeForbidden, "an admin host grant on %s", msg.ProtoWebToFleet)
	}
	return nil
}

// adminCall carries one admin call (list or end sessions) to a host's
// ptystore, with the admin host grant gateway auth signed.
func (f *Fleet) adminCall(ctx context.Context, _ *rpc.Call, a msg.FleetCall) (msgpack.RawMessage, error) {
	if err := validHost(a.Host); err != nil {
		return nil, err
	}
	if a.Op != msg.OpPtyList && a.Op != msg.OpPtyDrop {
		return nil, rpc.Errorf(rpc.CodeBadRequest, "%s is not an admin call a host takes from the gateway", a.Op)
	}
	if !a.HostGrant.Admin {
		return nil, rpc.Errorf(rpc.CodeBadRequest, "%s wants an admin host grant (host-admin-grant)", msg.OpFleetAdminCall)
	}
	a.Service = msg.PtyStore
	payload, err := f.Call(ctx, a)
	if err != nil {
		return nil, err
	}
	return msgpack.RawMessage(payload), nil
}

func validHost(host string) error {
	if !names.Machine(host) || host == msg.HostMachine {
		return rpc.Errorf(rpc.CodeBadRequest, "invalid host %q", host)
	}
	return nil
}

// call passes one call to a host's policy or ptystore and its reply back
// as it came (the host's helper encoded it).
func (f *Fleet) call(ctx context.Context, _ *rpc.Call, a msg.FleetCall) (msgpack.RawMessage, error) {
	if err := webCall(a); err != nil {
		return nil, err
	}
	switch a.Op {
	case msg.OpCreateShellSession, msg.OpPtyGet, msg.OpPtyPut:
		// Their pty would be closed at the relay: streaming only.
		return nil, rpc.Errorf(rpc.CodeBadRequest, "%s goes through %s", a.Op, msg.OpFleetOpen)
	}
	if a.Service != msg.Policy && a.Service != msg.PtyStore {
		return nil, rpc.Errorf(rpc.CodeBadRequest, "no service %q on a host", a.Service)
	}
	payload, err := f.Call(ctx, a)
	if err != nil {
		return nil, err
	}
	return msgpack.RawMessage(payload), nil
}

func (f *Fleet) open(ctx context.Context, _ *rpc.Call, a msg.FleetCall) (msg.FleetOpenReply, []*os.File, error) {
	if err := webCall(a); err != nil {
		return msg.FleetOpenReply{}, nil, err
	}
	out, master, err := f.Open(ctx, a)
	if err != nil {
		return msg.FleetOpenReply{}, nil, err
	}
	return out, []*os.File{master}, nil
}

func (f *Fleet) hosts(optable.None) (msg.FleetHostsReply, error) {
	hs, err := LoadHosts(f.Dir)
	if err != nil {
		return msg.FleetHostsReply{}, rpc.Errorf(msg.CodeFailed, "%v", err)
	}
	if hs.Hosts == nil {
		hs.Hosts = []msg.FleetHost{}
	}
	return msg.FleetHostsReply{Hosts: hs.Hosts}, nil
}
