package ptystore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"sluice/msg"
	"sluice/rpc"
)

// PolicyChecker asks the policy helper whether live sessions may go on
// ("ptystore to policy", check-sessions). The policy helper reads the file
// at each call, so the answer is the file as it is now.
type PolicyChecker func(ctx context.Context, a msg.CheckSessions) (msg.CheckSessionsReply, error)

// errPolicy wraps a policy refusal of an attach; it is answered as denied.
var errPolicy = errors.New("policy no longer allows this session")

// checkAttach asks policy whether the session may still be attached to:
// its owner must still be allowed a shell as its unix user on its machine
// and, for a read-write viewer, the viewer too, since typing into a shell
// is having it. A read-only viewer needs no rule of their own. Refusals
// and a policy that cannot be asked both refuse the attach. On success it
// returns the session's limits, from the owner's verdict, and records them.
func (h *Handler) checkAttach(ctx context.Context, g msg.Grant, info msg.SessionInfo, mode string) (msg.Limits, error) {
	if h.Policy == nil {
		l, _ := h.Store.Limits(info.ID)
		return l, nil
	}
	a := msg.CheckSessions{Grant: &g, Sessions: []msg.SessionCheck{
		{ID: info.ID, User: info.Owner, UnixUser: info.UnixUser, Machine: info.Machine},
	}}
	if mode == msg.ShareReadWrite && g.User != info.Owner {
		a.Sessions = append(a.Sessions, msg.SessionCheck{ID: info.ID, User: g.User, UnixUser: info.UnixUser, Machine: info.Machine})
	}
	key := newVerdictKey(g, info, mode)
	if l, ok := h.Verdicts.get(key, h.now()); ok {
		h.Store.SetLimits(info.ID, l)
		return l, nil
	}
	// A waiter that finds no kept allow after the asking call asks itself.
	if ch, leader := h.Verdicts.begin(key); !leader {
		select {
		case <-ch:
		case <-ctx.Done():
			return msg.Limits{}, rpc.Errorf(msg.CodeFailed, "the policy could not be asked; try again")
		}
		if l, ok := h.Verdicts.get(key, h.now()); ok {
			h.Store.SetLimits(info.ID, l)
			return l, nil
		}
	} else {
		defer h.Verdicts.end(key, ch)
	}
	var file fileID
	if h.Verdicts != nil {
		file = h.Verdicts.stat() // before asking: a change after it makes the verdict unusable
	}
	rep, err := h.Policy(ctx, a)
	if err != nil {
		h.Store.log.Warn("ptystore: attach refused: policy could not be asked", "id", info.ID, "user", g.User, "err", err)
		var re *rpc.RemoteError
		if errors.As(err, &re) && re.Code == msg.CodeBadGrant {
			return msg.Limits{}, rpc.Errorf(msg.CodeBadGrant, "%s", re.Msg)
		}
		return msg.Limits{}, rpc.Errorf(msg.CodeFailed, "the policy could not be asked; try again")
	}
	if len(rep.Verdicts) != len(a.Sessions) {
		return msg.Limits{}, rpc.Errorf(msg.CodeFailed, "the policy helper answered %d of %d questions", len(rep.Verdicts), len(a.Sessions))
	}
	for i, v := range rep.Verdicts {
		if v.Allow {
			continue
		}
		h.Store.log.Info("ptystore: attach refused by policy", "id", info.ID, "user", g.User, "owner", info.Owner,
			"checked", a.Sessions[i].User, "mode", mode, "rule", v.Rule)
		return msg.Limits{}, rpc.Errorf(msg.CodeDenied, "%s", v.Reason)
	}
	h.Store.SetLimits(info.ID, rep.Verdicts[0].Limits)
	h.Store.setDetached(info.ID, false) // the file allows it again
	h.Verdicts.put(key, file, h.now(), rep.Verdicts[0].Limits)
	return rep.Verdicts[0].Limits, nil
}

// Recheck asks policy about every live session and takes access away from
// those it no longer allows, as the file's on-revoke says: "end" drops
// them (the hangup helper ends the shell); "detach" keeps the shell and
// marks the session, so the frontend cuts off the pages streaming it
// (detach.go), and every attach is refused by the per-attach check until
// the policy allows it again. One recheck runs at a time.
func (h *Handler) Recheck(ctx context.Context) (msg.PtyRecheckReply, error) {
	if h.Policy == nil {
		return msg.PtyRecheckReply{}, errors.New("ptystore: recheck: no policy helper configured")
	}
	h.recheckMu.Lock()
	defer h.recheckMu.Unlock()
	h.Verdicts.clear()
	sessions := h.Store.List(nil)
	var rep msg.PtyRecheckReply
	rep.Checked = len(sessions)
	if len(sessions) == 0 {
		return rep, nil
	}
	byID := map[string]msg.SessionInfo{}
	a := msg.CheckSessions{}
	for _, s := range sessions {
		byID[s.ID] = s
		a.Sessions = append(a.Sessions, msg.SessionCheck{ID: s.ID, User: s.Owner, UnixUser: s.UnixUser, Machine: s.Machine})
	}
	pr, err := h.Policy(ctx, a)
	if err != nil {
		return rep, fmt.Errorf("ptystore: recheck: %w", err)
	}
	if len(pr.Verdicts) != len(a.Sessions) {
		return rep, fmt.Errorf("ptystore: recheck: policy answered %d of %d sessions", len(pr.Verdicts), len(a.Sessions))
	}
	action := pr.OnRevoke
	if action != msg.OnRevokeDetach {
		action = msg.OnRevokeEnd // unknown or empty: the safe one
	}
	for i, v := range pr.Verdicts {
		info := byID[a.Sessions[i].ID]
		// The file's limits apply from now, to what it keeps too.
		h.Store.SetLimits(info.ID, v.Limits)
		h.Store.setDetached(info.ID, !v.Allow && action == msg.OnRevokeDetach)
		if v.Allow {
			continue
		}
		r := msg.RevokedSession{Session: info, Action: action, Reason: v.Reason}
		h.Store.log.Info("ptystore: policy no longer allows a live session", "id", info.ID, "owner", info.Owner,
			"unix_user", info.UnixUser, "machine", info.Machine, "action", action, "rule", v.Rule)
		if action == msg.OnRevokeEnd {
			if err := h.Store.Drop(ctx, info.ID, nil); err != nil && !errors.Is(err, ErrNotFound) {
				r.Err = err.Error()
				h.Store.log.Error("ptystore: could not end a session the policy no longer allows", "id", info.ID, "err", err)
			}
		}
		rep.Revoked = append(rep.Revoked, r)
	}
	return rep, nil
}

// fileID is what tells one version of a file from another: a rename over
// it (sluicectl policy apply) changes the inode, an edit in place the
// size, mtime or ctime.
type fileID struct {
	dev, ino        uint64
	size            int64
	mtime, ctime    syscall.Timespec
	missing, failed bool
}

func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{missing: errors.Is(err, os.ErrNotExist), failed: !errors.Is(err, os.ErrNotExist)}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{failed: true}
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// WatchPolicy rechecks every session when the policy file's identity
// changes, polling every interval, and once at start (the file may have
// changed while ptystore was down). A recheck that fails (the policy
// helper not up yet, say) is tried again at the next poll.
func (h *Handler) WatchPolicy(ctx context.Context, path string, interval time.Duration) {
	var seen fileID
	done := false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		id := statID(path)
		if !done || id != seen {
			if _, err := h.Recheck(ctx); err != nil {
				h.Store.log.Warn("ptystore: recheck after a policy change failed; trying again", "file", path, "err", err)
				done = false
			} else {
				seen, done = id, true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
