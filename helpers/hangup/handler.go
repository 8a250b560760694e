package hangup

import (
	"context"
	"errors"
	"os"

	"sluice/msg"
	"sluice/rpc"
)

// Handler serves "ptystore to hangup" and "record to hangup". The
// route's allowlist (ptystore's or the recording helper's uid or group,
// from the kernel) is the whole authorization; what may be ended is then
// decided by End from the pty alone, whoever passed it.
type Handler struct {
	Config Config
}

// Handle serves one hangup: one op, exactly one fd.
func (h *Handler) Handle(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	defer closeAll(c.FDs)
	var req msg.Request
	if err := c.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	if req.Op != msg.OpHangup {
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "unknown op %q", req.Op)
	}
	if len(c.FDs) != 1 {
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "hangup takes exactly one fd, got %d", len(c.FDs))
	}
	res, err := End(ctx, c.FDs[0], h.Config)
	switch {
	case errors.Is(err, ErrRefused):
		h.Config.Log.Warn("hangup: refused", "peer", c.Peer.Creds.String(), "err", err)
		return rpc.Reply{}, rpc.Errorf(rpc.CodeForbidden, "%v", err)
	case errors.Is(err, ErrSurvived):
		return rpc.Reply{}, rpc.Errorf(msg.CodeFailed, "%v", err)
	case err != nil:
		return rpc.Reply{}, err
	}
	return rpc.Reply{Body: msg.HangupSessionReply{
		SID: int32(res.SID), Hungup: res.Hungup, Killed: res.Killed, Cgroup: res.Cgroup,
		Elapsed: res.Elapsed.Milliseconds(),
	}}, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
