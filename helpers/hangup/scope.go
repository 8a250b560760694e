package hangup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/sessioncg"
)

// Under systemd the shell machined starts goes through PAM ("login"), and
// pam_systemd moves it into a logind session scope of its own
// (user.slice/user-UID.slice/session-N.scope), where its children stay
// even when they leave its session with setsid. systemd would kill that
// scope with cgroup.kill or by enumerating it; the hangup helper holds
// only CAP_KILL (no write access to the cgroup tree, no D-Bus, no
// polkit), so it does what systemd does where it has no cgroup.kill:
// list cgroup.procs and signal each process, again until the scope is
// empty. SIGKILLed processes cannot fork, so the rounds converge.
//
// Which scope: only the logind session whose leader is the pty's session
// leader, as logind itself records it (/run/systemd/sessions/N,
// LEADER=). A shell the user started on some other pty inside, say, an
// ssh login has the ssh session's process as logind leader and never
// qualifies, so a pty cannot be used to end someone's whole login.

var scopeName = regexp.MustCompile(`^/user\.slice/user-[0-9]+\.slice/session-([A-Za-z0-9]+)\.scope$`)

// leaderScope is the cgroup directory of the logind session that sid
// leads, or "" when sid leads none.
func leaderScope(cfg Config, sid int) string {
	b, err := os.ReadFile(filepath.Join(cfg.Proc, strconv.Itoa(sid), "cgroup"))
	if err != nil {
		return ""
	}
	var rel string
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	m := scopeName.FindStringSubmatch(rel)
	if m == nil {
		return ""
	}
	if leader, err := sessionLeader(cfg.Sessions, m[1]); err != nil || leader != sid {
		return ""
	}
	mount := cfg.CgroupMount
	if mount == "" {
		if mount, err = sessioncg.Mount(); err != nil {
			return ""
		}
	}
	return filepath.Join(mount, rel)
}

// sessionLeader reads LEADER= from logind's record of session id.
func sessionLeader(dir, id string) (int, error) {
	f, err := os.Open(filepath.Join(dir, id))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "LEADER="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("no LEADER=")
}

// scopeProcs lists the live processes in the scope's cgroup.procs.
func scopeProcs(root, dir string) ([]proc, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	// The scope is gone: systemd removed it once empty. A scope removed
	// between the open and the read answers ENODEV (kernfs), which the
	// nspawn test met when the shell died at the first SIGHUP.
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hangup: %w", err)
	}
	var out []proc
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			continue
		}
		if p, err := readStat(root, pid); err == nil && !p.dead() {
			out = append(out, p)
		}
	}
	return out, nil
}

// inScope reports whether pid's cgroup is dir's.
func inScope(root, mount, dir string, pid int) bool {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mount, p) == dir
		}
	}
	return false
}

// signalScope sends sigs to every process in the scope. The pidfd is
// opened before the process's cgroup is read: if the process died in
// between and its pid went to another, the signal through the pidfd
// fails instead of reaching the newcomer.
func signalScope(cfg Config, dir string, skip func(proc) bool, sigs ...unix.Signal) (int, error) {
	procs, err := scopeProcs(cfg.Proc, dir)
	if err != nil {
		return 0, err
	}
	mount := strings.TrimSuffix(dir, scopeRel(dir))
	n := 0
	for _, p := range procs {
		if skip != nil && skip(p) {
			continue // signalled as a member of the session already
		}
		pfd, err := unix.PidfdOpen(p.pid, 0)
		if err != nil {
			continue
		}
		if inScope(cfg.Proc, mount, dir, p.pid) {
			for _, sig := range sigs {
				unix.PidfdSendSignal(pfd, sig, nil, 0)
			}
			n++
		}
		unix.Close(pfd)
	}
	return n, nil
}

// scopeRel is the /user.slice/... tail of a scope directory.
func scopeRel(dir string) string {
	if i := strings.Index(dir, "/user.slice/"); i >= 0 {
		return dir[i:]
	}
	return dir
}

// killScope SIGKILLs the scope's processes until none is left or the
// deadline passes, and returns how many it signalled.
func killScope(ctx context.Context, cfg Config, dir string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	total := 0
	for {
		n, err := signalScope(cfg, dir, nil, unix.SIGKILL)
		total += n
		if err != nil {
			return total, err
		}
		left, err := scopeProcs(cfg.Proc, dir)
		if err != nil || len(left) == 0 {
			return total, err
		}
		if time.Now().After(deadline) {
			return total, fmt.Errorf("%w: %d processes left in %s after SIGKILL", ErrSurvived, len(left), dir)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return total, fmt.Errorf("hangup: %w", ctx.Err())
		}
	}
}

// waitScope polls until the scope is empty or until.
func waitScope(ctx context.Context, cfg Config, dir string, until time.Time) error {
	for time.Now().Before(until) {
		left, err := scopeProcs(cfg.Proc, dir)
		if err != nil || len(left) == 0 {
			return err
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("hangup: %w", ctx.Err())
		}
	}
	return nil
}
