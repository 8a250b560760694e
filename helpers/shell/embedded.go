package shell

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"sluice/helpers/shell/login"
	"sluice/internal/pty"
	"sluice/internal/sessioncg"
	"sluice/msg"
)

// Embedded opens shells itself: a fresh pty, and the account's login shell
// started on it in a new session, as that account. It serves only the host
// (".host"), and only other accounts when running as root: an unprivileged
// helper can start shells for its own account and nobody else's.
//
// As root, every shell is a login: the sluice-login binary (package
// helpers/shell/login) runs the account checks and the PAM session on the new
// pty and starts the shell, and a refusal ("account expired") is this
// call's error, with nothing started.
type Embedded struct {
	Log *slog.Logger
	// Login is the sluice-login binary; empty: beside this executable.
	Login string
}

// DefaultTERM is used when the request carries no TERM: the browser side
// is an xterm-compatible emulator.
const DefaultTERM = "xterm-256color"

// Paths for a fresh login environment, as login(1) sets them.
const (
	userPath = "/usr/local/bin:/usr/bin:/bin"
	rootPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Open starts the shell. The child is a session leader with the pty slave
// as its controlling terminal and stdin/out/err; the helper keeps no copy
// of the slave, so when every master is closed the shell gets SIGHUP.
// The child is not tied to the helper: with Accept=yes the helper exits
// right after replying and the shell lives on (reparented to the runner,
// a child subreaper, or to init).
func (e *Embedded) Open(ctx context.Context, req msg.OpenShell) (Opened, error) {
	if req.Machine != msg.HostMachine {
		return Opened{}, fmt.Errorf("%w: machine %q: no machined here, the embedded backend serves only %s",
			ErrRefused, req.Machine, msg.HostMachine)
	}
	acct, err := LookupAccount(req.User)
	if err != nil {
		return Opened{}, err
	}
	attr := &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if euid := os.Geteuid(); euid == 0 {
		cred, err := credential(acct)
		if err != nil {
			return Opened{}, err
		}
		attr.Credential = cred
	} else if uint32(euid) != acct.UID {
		return Opened{}, fmt.Errorf("%w: running as uid %d, cannot open a shell for %s (uid %d) without root",
			ErrRefused, euid, acct.Name, acct.UID)
	}

	if attr.Credential != nil {
		return e.login(ctx, acct, attr.Credential.Groups, req)
	}
	path, argv := loginCommand(acct, req.Args)
	newCmd := func() *exec.Cmd {
		return &exec.Cmd{
			Path:        path,
			Args:        argv,
			Env:         environ(acct, req.Env),
			Dir:         homeDir(acct.Home),
			SysProcAttr: attr,
		}
	}
	cmd := newCmd()
	master, slave, err := pty.Open()
	if err != nil {
		return Opened{}, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := closeInheritedOnExec(); err != nil {
		master.Close()
		slave.Close()
		return Opened{}, err
	}
	// Its own cgroup, where the runner made room for one, so that ending
	// the session reaches what setsid'd away from it (package sessioncg).
	// Fail closed: no cgroup, no session.
	var cg *os.File
	if root := sessioncg.Root(); root != "" && os.Geteuid() == 0 {
		if cg, err = newSessionCgroup(root); err != nil {
			master.Close()
			slave.Close()
			return Opened{}, err
		}
		defer cg.Close()
		attr.UseCgroupFD, attr.CgroupFD = true, int(cg.Fd())
	}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		master.Close()
		if cg != nil {
			os.Remove(cg.Name())
			return Opened{}, fmt.Errorf("shell: start %s for %s in the session's cgroup: %w; the session was not started", path, acct.Name, err)
		}
		return Opened{}, fmt.Errorf("shell: start %s for %s: %w", path, acct.Name, err)
	}
	pid := cmd.Process.Pid
	// Reap it if the helper is still around when it ends (long-running
	// --listen mode); otherwise its new parent does.
	go func() {
		err := cmd.Wait()
		e.logger().Info("shell: ended", "pid", pid, "unix_user", acct.Name, "status", exitStatus(err))
	}()
	return Opened{Master: master, PID: pid}, nil
}

// login opens the shell through sluice-login, as root.
func (e *Embedded) login(ctx context.Context, acct Account, groups []uint32, req msg.OpenShell) (Opened, error) {
	bin := e.Login
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return Opened{}, fmt.Errorf("shell: own path, to find sluice-login: %w", err)
		}
		bin = filepath.Join(filepath.Dir(self), "sluice-login")
	}
	if err := login.CheckBinary(bin); err != nil {
		return Opened{}, fmt.Errorf("shell: %w", err)
	}
	master, slave, err := pty.Open()
	if err != nil {
		return Opened{}, err
	}
	defer slave.Close()
	if err := closeInheritedOnExec(); err != nil {
		master.Close()
		return Opened{}, err
	}
	var cgroup *os.File
	if root := sessioncg.Root(); root != "" {
		if cgroup, err = newSessionCgroup(root); err != nil {
			master.Close()
			return Opened{}, err
		}
		defer cgroup.Close()
	}
	st, err := login.Start(ctx, bin, login.Request{
		User: acct.Name, UID: acct.UID, GID: acct.GID, Groups: groups,
		Home: acct.Home, Shell: acct.Shell, Args: req.Args, Env: req.Env,
	}, slave, cgroup)
	if err != nil {
		master.Close()
		if cgroup != nil {
			os.Remove(cgroup.Name()) // empty: nothing started in it
		}
		if errors.Is(err, login.ErrRefused) {
			return Opened{}, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return Opened{}, fmt.Errorf("shell: login %s: %w", acct.Name, err)
	}
	go func() {
		err := st.Keeper.Wait()
		e.logger().Info("shell: session ended", "pid", st.ShellPID, "unix_user", acct.Name, "keeper", exitStatus(err))
	}()
	return Opened{Master: master, PID: st.ShellPID}, nil
}

// ErrNoCgroup: the runner made room for per-session cgroups and this
// session's could not be made. The session is refused rather than started
// outside one, where ending it would not reach what left it with setsid.
var ErrNoCgroup = errors.New("shell: the session's cgroup could not be made, so the session was not started")

func newSessionCgroup(root string) (*os.File, error) {
	sessioncg.Sweep(root)
	cg, err := sessioncg.New(root)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCgroup, err)
	}
	return cg, nil
}

func (e *Embedded) logger() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.Default()
}

// loginCommand is the program and argv: the account's shell as a login
// shell ("-bash"), or, when policy allowed a fixed command, exactly that.
func loginCommand(acct Account, args []string) (string, []string) {
	if len(args) > 0 {
		return args[0], args
	}
	sh := acct.Shell
	if sh == "" {
		sh = "/bin/sh"
	}
	return sh, []string{"-" + filepath.Base(sh)}
}

// environ is a fresh login environment: nothing from the helper's own, the
// account's variables, and the (policy-filtered) request variables, which
// may not override the account's.
func environ(acct Account, extra []string) []string {
	path := userPath
	if acct.UID == 0 {
		path = rootPath
	}
	sh := acct.Shell
	if sh == "" {
		sh = "/bin/sh"
	}
	env := []string{
		"HOME=" + acct.Home,
		"USER=" + acct.Name,
		"LOGNAME=" + acct.Name,
		"SHELL=" + sh,
		"PATH=" + path,
	}
	term := DefaultTERM
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "USER", "LOGNAME", "SHELL", "PATH":
			continue
		case "TERM":
			term = v
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TERM="+term)
}

// closeInheritedOnExec marks every fd above stderr close-on-exec. Go opens
// its own fds that way, but fds the helper inherited from whatever started
// it (a runner, a terminal, a CI harness) are not, and must not reach a
// shell running as someone else.
func closeInheritedOnExec() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("shell: close_range: %w", err)
	}
	// Before Linux 5.11.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("shell: list fds: %w", err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

func homeDir(home string) string {
	if st, err := os.Stat(home); err == nil && st.IsDir() {
		return home
	}
	return "/"
}

// credential is the account's uid, gid and supplementary groups.
func credential(acct Account) (*syscall.Credential, error) {
	cred := &syscall.Credential{Uid: acct.UID, Gid: acct.GID, Groups: []uint32{}}
	u, err := user.Lookup(acct.Name)
	if err != nil {
		return nil, fmt.Errorf("shell: groups of %s: %w", acct.Name, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("shell: groups of %s: %w", acct.Name, err)
	}
	for _, id := range ids {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("shell: groups of %s: %q: %w", acct.Name, id, err)
		}
		cred.Groups = append(cred.Groups, uint32(n))
	}
	return cred, nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}
