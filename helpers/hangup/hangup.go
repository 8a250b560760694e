package hangup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
	"sluice/internal/sessioncg"
)

// Errors of End; the handler maps them to rpc codes.
var (
	// ErrRefused: the pty's session is one the helper will not touch.
	ErrRefused = errors.New("refused")
	// ErrSurvived: processes of the session were still alive after
	// SIGKILL; the session has not ended.
	ErrSurvived = errors.New("processes survived")
)

var errESRCH = syscall.ESRCH

// Config of the hangup.
type Config struct {
	// Grace is how long processes get after SIGHUP before SIGKILL; 0: 2 s.
	Grace time.Duration
	// Proc is procfs; "": /proc.
	Proc string
	// Cgroups is where sluice makes one cgroup per session (the shell
	// helper's embedded backend, see package cgroup); "": none.
	Cgroups string
	// Sessions is logind's session records; "": /run/systemd/sessions.
	Sessions string
	// CgroupMount is the cgroup v2 mount; "": read from mountinfo.
	CgroupMount string
	Log         *slog.Logger
}

// Result says what End did. SID 0: nobody had the pty as controlling
// terminal, so there was nothing to do.
type Result struct {
	SID, PGRP int
	Hungup    int           // processes sent SIGHUP
	Killed    int           // processes still there after the grace, sent SIGKILL
	Cgroup    string        // the session's cgroup, killed and removed
	Elapsed   time.Duration // first signal to nothing left
}

func (c *Config) defaults() {
	if c.Grace <= 0 {
		c.Grace = 2 * time.Second
	}
	if c.Proc == "" {
		c.Proc = "/proc"
	}
	if c.Sessions == "" {
		c.Sessions = "/run/systemd/sessions"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// End hangs up the session whose controlling terminal is master's pty.
func End(ctx context.Context, master *os.File, cfg Config) (Result, error) {
	cfg.defaults()
	var res Result
	if err := pty.CheckMaster(master); err != nil {
		return res, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	tty, err := pty.SlaveDev(master)
	if err != nil {
		return res, err
	}
	fd := int(master.Fd())
	sid, err := unix.IoctlGetInt(fd, unix.TIOCGSID)
	if errors.Is(err, unix.ENOTTY) {
		// No session has the slave as controlling terminal: the shell
		// is gone already (or never took it), nothing to end.
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("hangup: TIOCGSID: %w", err)
	}
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil && !errors.Is(err, unix.ENOTTY) {
		return res, fmt.Errorf("hangup: TIOCGPGRP: %w", err)
	}
	res.SID, res.PGRP = sid, pgrp
	// The kernel answers in our pid namespace; 0 means the session lives
	// in one we cannot see into, and <= 1 is init's.
	if sid <= 1 {
		return res, fmt.Errorf("%w: the pty's session is %d", ErrRefused, sid)
	}
	self, _ := unix.Getsid(0)
	if sid == self || sid == os.Getpid() {
		return res, fmt.Errorf("%w: the pty's session %d is this helper's own", ErrRefused, sid)
	}
	leader, err := readStat(cfg.Proc, sid)
	if err != nil {
		return res, fmt.Errorf("%w: session leader %d: %v", ErrRefused, sid, err)
	}
	if leader.sid != sid || leader.tty != tty {
		return res, fmt.Errorf("%w: process %d does not lead a session on this pty (session %d, tty %#x, want %#x)",
			ErrRefused, sid, leader.sid, leader.tty, tty)
	}
	cg, err := sessionCgroup(cfg, sid)
	if err != nil {
		return res, err
	}
	// Under systemd: the logind session scope sid leads (see scope.go).
	scope := ""
	if cg == "" {
		scope = leaderScope(cfg, sid)
	}
	member := func(p proc) bool { return p.sid == sid || (pgrp > 1 && p.pgrp == pgrp) }
	procs, err := scan(cfg.Proc, member)
	if err != nil {
		return res, err
	}
	if err := protected(procs, self); err != nil {
		return res, err
	}
	if scope != "" {
		sp, err := scopeProcs(cfg.Proc, scope)
		if err != nil {
			return res, err
		}
		if err := protected(sp, self); err != nil {
			return res, err
		}
	}

	start := time.Now()
	res.Hungup = signal(cfg.Proc, procs, member, unix.SIGHUP, unix.SIGCONT)
	if scope != "" {
		n, err := signalScope(cfg, scope, member, unix.SIGHUP, unix.SIGCONT)
		if err != nil {
			return res, err
		}
		res.Hungup += n
	}
	left, err := waitGone(ctx, cfg.Proc, member, cfg.Grace)
	if err != nil {
		return res, err
	}
	if len(left) > 0 {
		res.Killed = signal(cfg.Proc, left, member, unix.SIGKILL)
	}
	if scope != "" {
		// What left the session gets the rest of the same grace.
		if err := waitScope(ctx, cfg, scope, start.Add(cfg.Grace)); err != nil {
			return res, err
		}
		n, err := killScope(ctx, cfg, scope, time.Second)
		res.Killed += n
		if err != nil {
			return res, err
		}
		res.Cgroup = scope
	}
	if cg != "" {
		if err := killCgroup(ctx, cg); err != nil {
			return res, err
		}
		res.Cgroup = cg
	}
	left, err = waitGone(ctx, cfg.Proc, member, time.Second)
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, err
	}
	if len(left) > 0 {
		pids := make([]string, len(left))
		for i, p := range left {
			pids[i] = fmt.Sprint(p.pid)
		}
		return res, fmt.Errorf("%w: session %d: %s still running after SIGKILL", ErrSurvived, sid, strings.Join(pids, " "))
	}
	cfg.Log.Info("hangup: session ended", "sid", sid, "pgrp", pgrp, "hungup", res.Hungup, "killed", res.Killed,
		"cgroup", res.Cgroup, "elapsed", res.Elapsed)
	return res, nil
}

// protected refuses a set of processes that holds something the helper
// must never signal, whatever pty led it there: init, the helper's parent
// (the runner or systemd, which would take every session down with it),
// the helper itself or anything of its own session.
func protected(procs []proc, self int) error {
	ppid := os.Getppid()
	for _, p := range procs {
		switch {
		case p.pid == 1, p.pid == ppid, p.pid == os.Getpid(), p.sid == self:
			return fmt.Errorf("%w: session %d holds process %d, which is never signalled", ErrRefused, p.sid, p.pid)
		}
	}
	return nil
}

// signal sends sigs to each process that is still the one scanned: a
// pidfd pins it, and its stat read again through the pid must show the
// same start time and still pass member, or the pid was reused.
func signal(root string, procs []proc, member func(proc) bool, sigs ...unix.Signal) int {
	n := 0
	for _, p := range procs {
		pfd, err := unix.PidfdOpen(p.pid, 0)
		if err != nil {
			continue // gone
		}
		now, err := readStat(root, p.pid)
		if err == nil && now.start == p.start && member(now) {
			ok := false
			for _, sig := range sigs {
				if unix.PidfdSendSignal(pfd, sig, nil, 0) == nil {
					ok = true
				}
			}
			if ok {
				n++
			}
		}
		unix.Close(pfd)
	}
	return n
}

// waitGone polls until no live member is left or d has passed, and
// returns those left.
func waitGone(ctx context.Context, root string, member func(proc) bool, d time.Duration) ([]proc, error) {
	deadline := time.Now().Add(d)
	for {
		left, err := scan(root, member)
		if err != nil || len(left) == 0 || time.Now().After(deadline) {
			return left, err
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return left, fmt.Errorf("hangup: %w", ctx.Err())
		}
	}
}

// sessionCgroup is the cgroup sluice made for the session led by sid, or
// "" when it sits in any other (systemd's unit for it, which systemd
// empties when its main process ends; or none was made).
func sessionCgroup(cfg Config, sid int) (string, error) {
	if cfg.Cgroups == "" {
		return "", nil
	}
	mount, err := sessioncg.Mount()
	if err != nil {
		return "", nil
	}
	dir, err := sessioncg.Of(mount, cfg.Proc, sid)
	if err != nil || !sessioncg.Owned(cfg.Cgroups, dir) {
		return "", nil
	}
	return dir, nil
}

func killCgroup(ctx context.Context, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return sessioncg.Kill(ctx, dir)
}
