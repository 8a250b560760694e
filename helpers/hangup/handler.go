package hangup

import (
	"context"
	"errors"
	"os"

	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// Handler serves "ptystore to hangup" and "record to hangup". The
// route's allowlist (ptystore's or the recording helper's uid or group,
// from the kernel) is the whole authorization; what may be ended is then
// decided by End from the pty alone, whoever passed it.
type Handler struct {
	PtyStore Config // for "ptystore to hangup"
	// Record is for "record to hangup": the same op, a shorter grace, so
	// the recorded shell's SIGKILL comes before ptystore's hangup kills
	// the recorder waiting for it.
	Record Config
}

// Tables is the hangup helper's whole surface: one op on each of its two
// protocols, taking exactly one fd, the pty master of the session to end.
// The two callers: ptystore, with the master of a session it drops, and
// the recording helper, with the master of the shell it records when that
// session ends (the pty ptystore holds is then the recorder's, so
// ptystore's hangup reaches the recorder, not the shell's session). Same
// op, same handler: the caller names no process either way. Only the grace
// differs: the recorder hands the shell over on ptystore's SIGHUP and
// waits for it, and ptystore's hangup SIGKILLs the recorder after --grace,
// so the shell's own SIGKILL must come first.
func (h *Handler) Tables() []optable.Table {
	return []optable.Table{
		{Protocol: msg.ProtoPtyStoreToHangup, Ops: []optable.Entry{optable.OpFDs(msg.OpHangup, 1, 0, h.hangup(&h.PtyStore))}},
		{Protocol: msg.ProtoRecordToHangup, Ops: []optable.Entry{optable.OpFDs(msg.OpHangup, 1, 0, h.hangup(&h.Record))}},
	}
}

func (h *Handler) hangup(cfg *Config) func(context.Context, *rpc.Call, optable.None) (msg.HangupSessionReply, []*os.File, error) {
	return func(ctx context.Context, c *rpc.Call, _ optable.None) (msg.HangupSessionReply, []*os.File, error) {
		defer closeAll(c.FDs)
		res, err := End(ctx, c.FDs[0], *cfg)
		switch {
		case errors.Is(err, ErrRefused):
			cfg.Log.Warn("hangup: refused", "peer", c.Peer.Creds.String(), "err", err)
			return msg.HangupSessionReply{}, nil, rpc.Errorf(rpc.CodeForbidden, "%v", err)
		case errors.Is(err, ErrSurvived):
			return msg.HangupSessionReply{}, nil, rpc.Errorf(msg.CodeFailed, "%v", err)
		case err != nil:
			return msg.HangupSessionReply{}, nil, err
		}
		return msg.HangupSessionReply{
			SID: int32(res.SID), Hungup: res.Hungup, Killed: res.Killed, Cgroup: res.Cgroup,
			Elapsed: res.Elapsed.Milliseconds(),
		}, nil, nil
	}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
