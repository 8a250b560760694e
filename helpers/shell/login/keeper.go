//go:build cgo && linux

package login

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxRequest bounds the request read from stdin.
const MaxRequest = 1 << 20

// UtmpFile is where the session's utmp entry goes; created as
// systemd-tmpfiles would (root:utmp 0664) when the host has none, which is
// the case in containers without an init that makes it.
var UtmpFile = "/var/run/utmp"

// Serve is sluice-login's main: it reads the Request, makes the login,
// reports "ok PID", "refused TEXT" or "error TEXT" as one line on stdout,
// and, after "ok", stays until the shell ends to close the session. The
// caller must have locked the main goroutine to its thread (PAM modules
// keep per-thread state: pam_keyinit's session keyring, pam_loginuid's
// /proc/self) so that the shell is forked from the thread PAM ran on.
func Serve(log *slog.Logger) int {
	status := os.Stdout
	say := func(word, text string) {
		text = strings.Join(strings.Fields(strings.ToValidUTF8(text, "?")), " ")
		if len(text) > MaxStatus-32 {
			text = text[:MaxStatus-32]
		}
		fmt.Fprintf(status, "%s %s\n", word, text)
	}
	fail := func(err error) int {
		if errors.Is(err, ErrRefused) {
			log.Warn("login: refused", "err", err)
			say("refused", strings.TrimPrefix(err.Error(), ErrRefused.Error()+": "))
			return 1
		}
		log.Error("login: failed", "err", err)
		say("error", err.Error())
		return 1
	}
	for _, fd := range []int{SlaveFD, CgroupFD} {
		unix.CloseOnExec(fd)
	}
	body, err := io.ReadAll(io.LimitReader(os.Stdin, MaxRequest+1))
	if err != nil || len(body) > MaxRequest {
		return fail(fmt.Errorf("login: request unreadable or over %d bytes", MaxRequest))
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		return fail(fmt.Errorf("login: request: %w", err))
	}
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("login: needs root to log %s in", req.User))
	}
	slave := os.NewFile(SlaveFD, "slave")
	line, err := ttyName(slave)
	if err != nil {
		return fail(err)
	}
	// The session's cgroup, when the helper passed one, is where the shell
	// must start: the hangup helper ends the session through it (fail
	// closed).
	var cgroup *os.File
	if st, err := os.Stat("/proc/self/fd/" + strconv.Itoa(CgroupFD)); err == nil && st.IsDir() {
		cgroup = os.NewFile(CgroupFD, "cgroup")
	}
	if req.Cgroup && cgroup == nil {
		return fail(errors.New("login: the session's cgroup (fd 4) is not there; the session was not started"))
	}
	s, err := begin(req, slave, line)
	if err != nil {
		return fail(err)
	}
	if err := s.start(req, cgroup); err != nil {
		s.end()
		return fail(err)
	}
	log = log.With("unix_user", req.User, "tty", line, "pid", s.shell.Process.Pid)
	log.Info("login: session opened")
	say("ok", strconv.Itoa(s.shell.Process.Pid))
	status.Close()

	// The keeper has no terminal; a hangup or stop reaches it only from
	// someone ending the session, which is what the shell must hear too.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- s.shell.Wait() }()
	for {
		select {
		case sig := <-sigs:
			log.Info("login: passing on", "signal", sig)
			syscall.Kill(-s.shell.Process.Pid, syscall.SIGHUP)
			continue
		case err := <-done:
			log.Info("login: session closed", "status", exitStatus(err))
		}
		break
	}
	s.end()
	return 0
}

// session is one login in progress: what end must undo.
type session struct {
	req   Request
	slave *os.File
	line  string // "pts/N"
	pam   *pamSession
	tty   bool
	shell *exec.Cmd
	defs  Defs
}

// begin runs every check and the PAM account and session phases, and
// hands the tty to the user. Nothing of the user's runs yet.
func begin(req Request, slave *os.File, line string) (*session, error) {
	if err := CheckAccount(req.User, req.UID, time.Now()); err != nil {
		return nil, err
	}
	s := &session{req: req, slave: slave, line: line, defs: ReadDefs()}
	// Before the session phase, so that pam_umask, where configured, has
	// the last word, as with login.
	syscall.Umask(int(s.defs.Umask))
	p, err := pamStart(req.User, "/dev/"+line)
	if err != nil {
		return nil, err
	}
	s.pam = p
	if err := p.account(); err != nil {
		s.end()
		return nil, err
	}
	if err := p.open(); err != nil {
		s.end()
		return nil, err
	}
	// pam_limits set them with the C library, behind the Go runtime's
	// back: the runtime would otherwise restore its own startup
	// RLIMIT_NOFILE in the child. Setting the same value from Go clears
	// that.
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	gid := -1
	if g, err := user.LookupGroup(s.defs.TTYGroup); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	}
	// 0620 and group tty, as sshd: write(1) and wall work (they are
	// setgid tty), nobody else reads or writes the terminal.
	if err := slave.Chown(int(req.UID), gid); err != nil {
		s.end()
		return nil, fmt.Errorf("login: chown /dev/%s: %w", line, err)
	}
	s.tty = true
	if err := slave.Chmod(0o620); err != nil {
		s.end()
		return nil, fmt.Errorf("login: chmod /dev/%s: %w", line, err)
	}
	// What the modules said in the session phase (motd, last login)
	// is the login banner.
	if said := p.messages(); said != "" {
		slave.WriteString(said)
	}
	return s, nil
}

// start runs the shell (or the fixed command) on the tty as the user.
func (s *session) start(req Request, cgroup *os.File) error {
	sh := req.Shell
	if sh == "" {
		sh = "/bin/sh"
	}
	path, argv := sh, []string{"-" + filepath.Base(sh)}
	if len(req.Args) > 0 {
		path, argv = req.Args[0], req.Args
	}
	groups := req.Groups
	if groups == nil {
		groups = []uint32{}
	}
	attr := &syscall.SysProcAttr{
		Setsid: true, Setctty: true, Ctty: 0,
		Credential: &syscall.Credential{Uid: req.UID, Gid: req.GID, Groups: groups},
	}
	if cgroup != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, int(cgroup.Fd())
	}
	dir := req.Home
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = "/"
	}
	env := s.environ(req, sh)
	newCmd := func() *exec.Cmd {
		return &exec.Cmd{
			Path: path, Args: argv, Dir: dir, Env: env,
			Stdin: s.slave, Stdout: s.slave, Stderr: s.slave,
			SysProcAttr: attr,
		}
	}
	s.shell = newCmd()
	err := s.shell.Start()
	if err != nil && attr.UseCgroupFD {
		// Not started without it: a session outside its cgroup cannot be
		// ended whole (what setsid's away survives the hangup).
		s.shell = nil
		return fmt.Errorf("login: start %s for %s in the session's cgroup: %w; the session was not started", path, req.User, err)
	}
	if err != nil {
		s.shell = nil
		return fmt.Errorf("login: start %s for %s: %w", path, req.User, err)
	}
	if err := ensureUtmp(); err != nil {
		slog.Warn("login: no utmp entry", "err", err)
	}
	utmpLogin(s.shell.Process.Pid, s.line, req.User)
	return nil
}

// environ: login's variables, then PAM's (pam_env, pam_mail, logind's
// XDG_*), then the request's, which may override neither.
func (s *session) environ(req Request, sh string) []string {
	path := s.defs.Path
	if req.UID == 0 {
		path = s.defs.SuPath
	}
	vars := map[string]string{}
	var order []string
	set := func(kv string, override bool) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return
		}
		if _, had := vars[k]; had && !override {
			return
		}
		if _, had := vars[k]; !had {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range []string{"HOME=" + req.Home, "USER=" + req.User, "LOGNAME=" + req.User, "SHELL=" + sh, "PATH=" + path} {
		set(kv, true)
	}
	for _, kv := range s.pam.env() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || k == "USER" || k == "LOGNAME" || k == "SHELL" {
			continue
		}
		set(kv, true)
	}
	term := "xterm-256color"
	for _, kv := range req.Env {
		if k, v, _ := strings.Cut(kv, "="); k == "TERM" {
			term = v
			continue
		}
		set(kv, false)
	}
	set("TERM="+term, true)
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env
}

// end closes what begin and start opened: the utmp entry is marked dead,
// the tty goes back to root 0600 (a process the user left holding it
// keeps its fd, but cannot reopen the device or change its mode), the PAM
// session closes.
func (s *session) end() {
	if s.shell != nil {
		utmpLogout(s.shell.Process.Pid, s.line)
	}
	if s.tty {
		s.slave.Chown(0, 0)
		s.slave.Chmod(0o600)
	}
	s.slave.Close()
	if s.pam != nil {
		s.pam.close()
		s.pam = nil
	}
}

// ttyName is "pts/N" for the slave fd, read back from /proc as ttyname(3)
// does.
func ttyName(slave *os.File) (string, error) {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(slave.Fd())))
	if err != nil {
		return "", fmt.Errorf("login: tty name: %w", err)
	}
	if !strings.HasPrefix(target, "/dev/pts/") {
		return "", fmt.Errorf("login: fd %d is %s, not a pty slave", slave.Fd(), target)
	}
	return strings.TrimPrefix(target, "/dev/"), nil
}

// ensureUtmp creates an empty utmp file where there is none, without
// following a planted symlink.
func ensureUtmp() error {
	fd, err := unix.Open(UtmpFile, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o664)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("login: create %s: %w", UtmpFile, err)
	}
	defer unix.Close(fd)
	if g, err := user.LookupGroup("utmp"); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			unix.Fchown(fd, 0, gid)
		}
	}
	return unix.Fchmod(fd, 0o664)
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}
