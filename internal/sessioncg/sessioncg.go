// Package sessioncg is the one cgroup v2 directory per shell session that
// sluice makes where no systemd does it (the embedded runner): the shell
// helper starts each login shell straight into a fresh one
// (CLONE_INTO_CGROUP), and the hangup helper, ending that session, kills
// the whole cgroup, which catches what left the session with setsid.
//
// Layout: ROOT/session-<16 hex>, ROOT being $SLUICE_SESSION_CGROUPS (made
// by the runner under its own cgroup when it may). Nothing else lives
// below ROOT, and only root can make directories there.
package sessioncg

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Env names the variable that carries ROOT to the helpers.
const Env = "SLUICE_SESSION_CGROUPS"

// Prefix starts every session cgroup's name.
const Prefix = "session-"

// Root is $SLUICE_SESSION_CGROUPS, or "" when sessions get no cgroup.
func Root() string { return os.Getenv(Env) }

// Mount is where the cgroup v2 hierarchy is mounted, read from
// /proc/self/mountinfo: /sys/fs/cgroup on a unified system,
// /sys/fs/cgroup/unified on a hybrid one.
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("sessioncg: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, tf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(tf) >= 1 && tf[0] == "cgroup2" && pf[3] == "/" {
			return unescape(pf[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("sessioncg: mountinfo: %w", err)
	}
	return "", errors.New("sessioncg: no cgroup2 mount")
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Of is the directory of pid's cgroup v2, read from procRoot/PID/cgroup
// (the "0::" line) under the mount.
func Of(mount, procRoot string, pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return "", fmt.Errorf("sessioncg: cgroup of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			if !strings.HasPrefix(p, "/") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
				return "", fmt.Errorf("sessioncg: cgroup of %d: odd path %q", pid, p)
			}
			return filepath.Join(mount, p), nil
		}
	}
	return "", fmt.Errorf("sessioncg: %d has no cgroup v2", pid)
}

// Owned reports whether dir is a session cgroup directly below root.
func Owned(root, dir string) bool {
	if root == "" {
		return false
	}
	return filepath.Dir(dir) == filepath.Clean(root) && strings.HasPrefix(filepath.Base(dir), Prefix) &&
		len(filepath.Base(dir)) == len(Prefix)+16
}

// New makes a fresh session cgroup below root and returns it opened as a
// directory, for SysProcAttr.CgroupFD.
func New(root string) (*os.File, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("sessioncg: %w", err)
	}
	dir := filepath.Join(root, Prefix+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sessioncg: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("sessioncg: %w", err)
	}
	return f, nil
}

// SweepAge is how old an empty session cgroup must be before Sweep removes
// it. A cgroup is empty for a moment between New and the shell's clone into
// it; another shell helper's (or runner's) Sweep in that moment removed it,
// the shell started outside it, and ending that session left what had
// setsid'd away running.
const SweepAge = time.Minute

// Sweep removes the session cgroups below root that are empty and older
// than SweepAge: the sessions that ended on their own. rmdir fails on a
// populated cgroup, so a live one is never touched.
func Sweep(root string) { sweep(root, SweepAge, time.Now()) }

func sweep(root string, age time.Duration, now time.Time) {
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || !Owned(root, dir) {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil || now.Sub(time.Unix(st.Ctim.Unix())) < age {
			continue
		}
		os.Remove(dir)
	}
}

// Kill SIGKILLs every process in dir and below (cgroup.kill, Linux 5.14),
// waits until the cgroup is empty and removes it.
func Kill(ctx context.Context, dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("sessioncg: kill %s: %w", dir, err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("sessioncg: kill %s: %w", dir, err)
		}
		if strings.Contains(string(b), "populated 0") {
			break
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("sessioncg: kill %s: still populated: %w", dir, ctx.Err())
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sessioncg: remove %s: %w", dir, err)
	}
	return nil
}
