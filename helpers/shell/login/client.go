package login

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Request is what the shell helper hands sluice-login on its stdin: the
// account, already looked up and allowed by policy, and what to run.
type Request struct {
	User   string   `json:"user"`
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
	Home   string   `json:"home"`
	Shell  string   `json:"shell"`
	// Args, when set, is the fixed command policy allowed (argv, absolute
	// path first); else the login shell runs.
	Args []string `json:"args,omitempty"`
	// Env is the request's (policy-filtered) variables; TERM among them.
	Env []string `json:"env,omitempty"`
	// Cgroup says the session's cgroup directory is fd 4, where the shell
	// must start (Start sets it): without it sluice-login refuses rather
	// than start the shell outside. Said here, not guessed from fd 4,
	// which the Go runtime may have taken when none was passed.
	Cgroup bool `json:"cgroup,omitempty"`
}

// Fds of sluice-login: stdin carries the Request, stdout the one status
// line, stderr its log; the pty slave and, optionally, the session's
// cgroup directory follow.
const (
	SlaveFD  = 3
	CgroupFD = 4
)

// MaxStatus bounds the status line, refusal text included.
const MaxStatus = 2048

// StartTimeout bounds the account and session phases: PAM modules may
// talk to daemons (pam_systemd to logind), but a login that does not
// start in this long will not.
const StartTimeout = 30 * time.Second

// Started is a login whose session opened: the pid of the shell (the
// session leader on the pty), and the sluice-login process that keeps the
// session and closes it when the shell ends.
type Started struct {
	ShellPID int
	Keeper   *exec.Cmd
}

// Start runs the sluice-login binary at path on slave and waits until it
// says the shell runs, or why not. A refusal is an error wrapping
// ErrRefused, with the text for the page; nothing was started then.
func Start(ctx context.Context, path string, req Request, slave, cgroup *os.File) (Started, error) {
	req.Cgroup = cgroup != nil
	body, err := json.Marshal(req)
	if err != nil {
		return Started{}, fmt.Errorf("login: encode request: %w", err)
	}
	env := []string{}
	if v, ok := os.LookupEnv("JOURNAL_STREAM"); ok {
		// Its log lines go where the helper's go, as journal entries.
		env = append(env, "JOURNAL_STREAM="+v)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   []string{"sluice-login"},
		Env:    env,
		Dir:    "/",
		Stdin:  strings.NewReader(string(body)),
		Stderr: os.Stderr,
		// A session of its own: not in the helper's process group, no
		// controlling terminal (the shell takes the pty as its own).
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	cmd.ExtraFiles = []*os.File{slave}
	if cgroup != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, cgroup)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Started{}, fmt.Errorf("login: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return Started{}, fmt.Errorf("login: start %s: %w", path, err)
	}
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, err := bufio.NewReaderSize(io.LimitReader(out, MaxStatus), MaxStatus).ReadString('\n')
		done <- result{line, err}
	}()
	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r.err = ctx.Err()
	case <-timer.C:
		r.err = fmt.Errorf("no answer in %v", StartTimeout)
	}
	fail := func(err error) (Started, error) {
		// Killing the keeper before its shell started leaves nothing
		// behind; after, the shell would be an orphan without a session
		// keeper, so this only happens when it never said "ok".
		cmd.Process.Kill()
		cmd.Wait()
		return Started{}, err
	}
	if r.err != nil && !(errors.Is(r.err, io.EOF) && r.line != "") {
		if errors.Is(r.err, io.EOF) {
			return fail(fmt.Errorf("login: sluice-login ended without an answer (see its log)"))
		}
		return fail(fmt.Errorf("login: waiting for sluice-login: %w", r.err))
	}
	word, rest, _ := strings.Cut(strings.TrimSuffix(r.line, "\n"), " ")
	switch word {
	case "ok":
		pid, err := strconv.Atoi(rest)
		if err != nil || pid <= 0 {
			return fail(fmt.Errorf("login: sluice-login said %q", r.line))
		}
		return Started{ShellPID: pid, Keeper: cmd}, nil
	case "refused":
		cmd.Wait()
		return Started{}, fmt.Errorf("%w: %s", ErrRefused, rest)
	case "error":
		cmd.Wait()
		return Started{}, fmt.Errorf("login: %s", rest)
	}
	return fail(fmt.Errorf("login: sluice-login said %q", r.line))
}

// CheckBinary refuses a sluice-login that anyone but root could have
// replaced: the shell helper runs it as root. Owner root, not writable by
// group or others, and the same for the directory it is in.
func CheckBinary(path string) error {
	for i, p := range []string{path, dirOf(path)} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("login: %s: %w", p, err)
		}
		// A sticky directory (/tmp) keeps others from replacing root's file.
		sticky := i == 1 && st.Mode&unix.S_ISVTX != 0
		if st.Uid != 0 || st.Mode&0o022 != 0 && !sticky {
			return fmt.Errorf("login: %s is owned by uid %d with mode %#o: must be root's and writable by root alone", p, st.Uid, st.Mode&0o7777)
		}
	}
	return nil
}

func dirOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	switch {
	case i < 0:
		return "."
	case i == 0:
		return "/"
	}
	return p[:i]
}
