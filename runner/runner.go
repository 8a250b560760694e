package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/sessioncg"
	"sluice/rpc"
	"sluice/runner/spawn"
	"sluice/suite"
)

// Options of one runner.
type Options struct {
	Config     *Config
	RuntimeDir string // sockets, manifest, credentials, notify sockets
	BinDir     string // helper binaries
	StateDir   string // units' state directories and generated keys
	Log        *slog.Logger
	Stdout     io.Writer // where the URL goes; default os.Stdout
	// ReadyTimeout bounds the wait for READY=1 from notify units before
	// the URL is printed anyway; default 30s.
	ReadyTimeout time.Duration
}

// DefaultRuntimeDir is /run/sluice for root, else $XDG_RUNTIME_DIR/sluice,
// else /tmp/sluice-UID.
func DefaultRuntimeDir() string {
	if os.Geteuid() == 0 {
		return suite.DefaultRuntimeDir
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "sluice")
	}
	return fmt.Sprintf("/tmp/sluice-%d", os.Geteuid())
}

// DefaultStateDir is /var/lib/sluice for root, else
// $XDG_STATE_HOME/sluice or ~/.local/state/sluice.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/sluice"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "sluice")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "sluice")
	}
	return fmt.Sprintf("/tmp/sluice-state-%d", os.Geteuid())
}

// Runner supervises the units of one config.
type Runner struct {
	opts  Options
	cfg   *Config
	log   *slog.Logger
	root  bool
	self  identity
	units map[string]*unit
	order []*unit
	files map[string]*file

	sessionCG string // per-session cgroups' directory; "": none

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // service loops
	acceptWG sync.WaitGroup // accept loops
	lock     *os.File
	reserved []*reservation // dynamic users' ids, held until Stop
	stopMu   sync.Mutex
	closed   bool
}

// unit is one configured unit's live state.
type unit struct {
	r    *Runner
	cfg  *Unit
	id   identity
	path string   // executable
	exe  *os.File // path, opened O_PATH: what every start executes
	argv []string // expanded
	env  []string // base environment, expanded

	listener *net.UnixListener // unix socket, if any, while the runner accepts on it (Accept=yes)
	sockFile *os.File          // its fd for Accept=no children
	sockPath string            // Accept=no: the socket's path, removed at stop
	tcp      net.Listener
	tcpFile  *os.File
	logW     *os.File // write end of the unit's log pipe
	logR     *os.File
	logDone  chan struct{}

	// Accept=yes
	instMu    sync.Mutex
	instances map[*spawn.Process]struct{}

	// Accept=no
	svc *service
}

// New checks the config against the machine: binaries exist, users
// resolve, references expand. Nothing is created yet.
func New(opts Options) (_ *Runner, err error) {
	if opts.Config == nil {
		return nil, errors.New("runner: no config")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	for _, d := range []*string{&opts.RuntimeDir, &opts.BinDir, &opts.StateDir} {
		if *d == "" {
			return nil, errors.New("runner: runtime, bin and state directories must be set")
		}
		abs, err := filepath.Abs(*d)
		if err != nil {
			return nil, fmt.Errorf("runner: %w", err)
		}
		*d = abs
	}
	me, err := self()
	if err != nil {
		return nil, err
	}
	r := &Runner{opts: opts, cfg: opts.Config, log: opts.Log, root: os.Geteuid() == 0, self: me,
		units: map[string]*unit{}}
	defer func() {
		if err != nil {
			r.closeExecutables()
			r.releaseIDs()
		}
	}()
	r.sessionCG = sessionCgroupsDir(r.root)
	var pending []*unit
	for i := range r.cfg.Units {
		uc := &r.cfg.Units[i]
		id, ok, err := resolveIdentity(uc, r.root, r.log)
		if err != nil {
			return nil, err
		}
		u := &unit{r: r, cfg: uc, id: id, instances: map[*spawn.Process]struct{}{}}
		r.units[uc.Name] = u
		r.order = append(r.order, u)
		if !ok {
			pending = append(pending, u)
		}
	}
	if len(pending) > 0 {
		procs := processIDs()
		inUse := func(id uint32) bool { return procs[id] || idInUse(id) }
		reserve := func(id uint32, name string) (bool, error) {
			res, err := reserveUID(id, name)
			if res != nil {
				r.reserved = append(r.reserved, res)
			}
			return res != nil, err
		}
		if err := allocateDynamic(r.order, pending, inUse, reserve); err != nil {
			return nil, err
		}
	}
	for _, u := range pending {
		if err := resolveGroups(u.cfg, &u.id, r.log); err != nil {
			return nil, err
		}
		r.log.Info("runner: dynamic user", "unit", u.cfg.Name, "user", u.id.name, "uid", u.id.uid, "gid", u.id.gid)
	}
	if err := r.resolveGroupRefs(); err != nil {
		return nil, err
	}
	if err := r.resolveFiles(); err != nil {
		return nil, err
	}
	var missing, unusable []string
	for _, u := range r.order {
		if u.argv, err = r.expandAll(u.cfg.Exec); err != nil {
			return nil, fmt.Errorf("runner: unit %s: exec: %w", u.cfg.Name, err)
		}
		u.path = r.resolveBinary(u.argv[0])
		if u.exe, err = openExecutable(u.path, u.id); err != nil {
			if strings.HasSuffix(err.Error(), ": no such file") {
				missing = append(missing, fmt.Sprintf("unit %s: %v", u.cfg.Name, err))
			} else {
				unusable = append(unusable, fmt.Sprintf("unit %s: %v", u.cfg.Name, err))
			}
		}
		u.argv[0] = filepath.Base(u.argv[0])
		if err := u.buildEnv(); err != nil {
			return nil, err
		}
		if _, _, err := r.ownerIDs(u.cfg.Socket.User, u.cfg.Socket.Group); err != nil {
			return nil, fmt.Errorf("runner: unit %s: %w", u.cfg.Name, err)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("runner: missing helper binaries (build them with `make build`, or point --bin-dir at them):\n  %s",
			strings.Join(missing, "\n  "))
	}
	if unsafe := r.checkSafe(); len(unsafe) > 0 {
		return nil, fmt.Errorf("runner: refusing unsafe paths (as sshd's StrictModes; see docs/runner.md):\n  %s",
			strings.Join(unsafe, "\n  "))
	}
	unusable = append(unusable, r.checkReach()...)
	if len(unusable) > 0 {
		return nil, fmt.Errorf("runner: units could not use these paths as the users they run as "+
			"(choose directories every unit can traverse, such as the defaults /run/sluice and /var/lib/sluice; see docs/runner.md):\n  %s",
			strings.Join(unusable, "\n  "))
	}
	return r, nil
}

func (r *Runner) releaseIDs() {
	for _, res := range r.reserved {
		res.release()
	}
	r.reserved = nil
}

func (r *Runner) closeExecutables() {
	for _, u := range r.order {
		if u.exe != nil {
			u.exe.Close()
			u.exe = nil
		}
	}
}

func (r *Runner) expandAll(in []string) ([]string, error) {
	out := make([]string, len(in))
	for i, s := range in {
		v, err := r.Expand(s)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (r *Runner) resolveBinary(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return filepath.Join(r.opts.BinDir, name)
}

// ManifestPath is where the runner writes build-ids.json.
func (r *Runner) ManifestPath() string { return filepath.Join(r.opts.RuntimeDir, "build-ids.json") }

// SocketPath is a unit's unix socket.
func (r *Runner) SocketPath(name string) string {
	if u := r.units[name]; u != nil && u.cfg.Socket.Path != "" {
		return u.cfg.Socket.Path
	}
	return filepath.Join(r.opts.RuntimeDir, name+".sock")
}

func (r *Runner) notifyPath(name string) string {
	return filepath.Join(r.opts.RuntimeDir, "notify", name)
}

func (r *Runner) credDir(name string) string {
	return filepath.Join(r.opts.RuntimeDir, "credentials", name)
}

// buildEnv is the environment systemd would give the unit's processes,
// less what each start adds (LISTEN_*, NOTIFY_SOCKET).
func (u *unit) buildEnv() error {
	r := u.r
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SLUICE_RUNTIME_DIR=" + r.opts.RuntimeDir,
		"SLUICE_MANIFEST=" + r.ManifestPath(),
		"RUNTIME_DIRECTORY=" + r.opts.RuntimeDir,
		"USER=" + u.id.name, "LOGNAME=" + u.id.name, "HOME=" + u.id.home, "SHELL=" + u.id.shell,
	}
	if r.sessionCG != "" {
		env = append(env, sessioncg.Env+"="+r.sessionCG)
	}
	for _, k := range []string{"LANG", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if len(u.cfg.Credentials) > 0 {
		env = append(env, "CREDENTIALS_DIRECTORY="+r.credDir(u.cfg.Name))
	}
	if u.cfg.StateDirectory {
		env = append(env, "STATE_DIRECTORY="+filepath.Join(r.opts.StateDir, u.cfg.Name))
	}
	keys := make([]string, 0, len(u.cfg.Env))
	for k := range u.cfg.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, err := r.Expand(u.cfg.Env[k])
		if err != nil {
			return fmt.Errorf("runner: unit %s: env %s: %w", u.cfg.Name, k, err)
		}
		env = append(env, k+"="+v)
	}
	u.env = env
	return nil
}

// Start prepares the runtime directory and starts every unit. It returns
// once notify units said READY=1 (or ReadyTimeout passed) and the on_ready
// steps ran. On error everything started is stopped again.
func (r *Runner) Start(ctx context.Context) (err error) {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	if err := spawn.SetSubreaper(); err != nil {
		return err
	}
	if err := r.prepareDirs(); err != nil {
		return err
	}
	r.makeSessionCgroups()
	m, err := suite.BuildManifest(r.opts.BinDir)
	if err != nil {
		return fmt.Errorf("runner: build manifest: %w", err)
	}
	if err := m.Write(r.ManifestPath()); err != nil {
		return err
	}
	for _, u := range r.order {
		if err := u.setup(); err != nil {
			return err
		}
	}
	for _, u := range r.order {
		if u.cfg.Accept {
			r.acceptWG.Add(1)
			go func() { defer r.acceptWG.Done(); u.acceptLoop() }()
			r.log.Info("runner: listening", "unit", u.cfg.Name, "socket", r.SocketPath(u.cfg.Name), "accept", true)
			continue
		}
		svc, err := newService(u)
		if err != nil {
			return err
		}
		u.svc = svc
		r.wg.Add(1)
		go func() { defer r.wg.Done(); svc.run() }()
	}
	if err := r.waitReady(ctx); err != nil {
		return err
	}
	r.announce(ctx)
	return nil
}

func (r *Runner) waitReady(ctx context.Context) error {
	t := time.NewTimer(r.opts.ReadyTimeout)
	defer t.Stop()
	for _, u := range r.order {
		if u.svc == nil || !u.cfg.Notify {
			continue
		}
		select {
		case <-u.svc.ready:
		case <-t.C:
			r.log.Warn("runner: unit not ready yet, going on", "unit", u.cfg.Name, "waited", r.opts.ReadyTimeout)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// announce prints the URL and runs the on_ready steps.
func (r *Runner) announce(ctx context.Context) {
	for _, u := range r.order {
		if u.cfg.TCP != "" && u.tcp != nil {
			fmt.Fprintf(r.opts.Stdout, "sluice: open %s\n", browserURL(u.tcp.Addr().String()))
		}
	}
	for _, argv := range r.cfg.OnReady {
		r.runHook(ctx, argv)
	}
}

// browserURL turns a listen address into what to type in a browser:
// passkeys need a secure context, which http://localhost is.
func browserURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	switch host {
	case "127.0.0.1", "::1", "0.0.0.0", "::", "":
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func (r *Runner) runHook(ctx context.Context, in []string) {
	if len(in) == 0 {
		return
	}
	argv, err := r.expandAll(in)
	if err != nil {
		r.log.Warn("runner: on_ready step skipped", "argv", in, "err", err)
		return
	}
	path := r.resolveBinary(argv[0])
	exe, err := openExecutable(path, r.self)
	if err != nil {
		r.log.Info("runner: on_ready step skipped: binary missing", "argv", argv, "err", err)
		return
	}
	defer exe.Close()
	env := append(os.Environ(), "SLUICE_RUNTIME_DIR="+r.opts.RuntimeDir, "SLUICE_MANIFEST="+r.ManifestPath())
	// Its output goes to our stdout, not the log: an enrollment link is for
	// the person who started the runner. Both streams share one pipe, so
	// they keep their order, and come indented under the command line.
	pr, pw, err := os.Pipe()
	if err != nil {
		r.log.Warn("runner: on_ready step failed to start", "argv", argv, "err", err)
		return
	}
	defer pr.Close()
	p, err := spawn.Start(&spawn.Attr{Path: path, Exec: exe, Args: argv, Env: env, Files: []syscall.Conn{nil, pw, pw}, Umask: -1})
	pw.Close()
	if err != nil {
		r.log.Warn("runner: on_ready step failed to start", "argv", argv, "err", err)
		return
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		var b strings.Builder
		b.WriteString("sluice: $ " + strings.Join(argv, " ") + "\n")
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			b.WriteString("  " + sc.Text() + "\n")
		}
		io.WriteString(r.opts.Stdout, b.String())
	}()
	select {
	case <-p.Done():
		if ws := p.Wait(); ws.ExitStatus() != 0 {
			r.log.Warn("runner: on_ready step failed", "argv", argv, "status", spawn.Describe(ws))
		}
	case <-ctx.Done():
		p.Signal(syscall.SIGTERM)
		p.Wait()
	}
	select {
	case <-copied:
	case <-time.After(time.Second):
		// Something it started still holds the pipe: stop waiting.
		pr.Close()
		<-copied
	}
}

// Stop stops every unit (SIGTERM, then SIGKILL after the stop timeout),
// closes the sockets and removes what the runner put in the runtime
// directory. Safe to call more than once.
func (r *Runner) Stop() error {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.cancel != nil {
		r.cancel()
	}
	// No new connections: close the listeners first (the accept loops end).
	for _, u := range r.order {
		if u.listener != nil {
			u.listener.Close()
		}
		if u.sockPath != "" {
			os.Remove(u.sockPath)
		}
		if u.tcp != nil {
			u.tcp.Close()
		}
	}
	// An accept loop may be between accept and spawn: once the loops are
	// gone, every instance there will ever be is in the instance sets.
	r.acceptWG.Wait()
	timeout := time.Duration(r.cfg.StopTimeout)
	var wg sync.WaitGroup
	for _, u := range r.order {
		wg.Add(1)
		go func() { defer wg.Done(); u.stopProcesses(timeout) }()
	}
	wg.Wait()
	r.wg.Wait()
	for _, u := range r.order {
		u.closeFiles()
	}
	r.closeExecutables()
	r.releaseIDs()
	// Only a runner that held the directory's lock cleans it: one that
	// was refused must not touch the running one's files.
	if r.lock != nil {
		os.Remove(r.ManifestPath())
		removeAllWritable(filepath.Join(r.opts.RuntimeDir, "credentials"))
		os.RemoveAll(filepath.Join(r.opts.RuntimeDir, "notify"))
		os.Remove(r.lock.Name())
		r.lock.Close()
	}
	r.log.Info("runner: stopped")
	return nil
}

// stopProcesses ends the unit's processes: SIGTERM, then SIGKILL.
func (u *unit) stopProcesses(timeout time.Duration) {
	var procs []*spawn.Process
	if u.svc != nil {
		if p := u.svc.stop(); p != nil {
			procs = append(procs, p)
		}
	}
	u.instMu.Lock()
	for p := range u.instances {
		procs = append(procs, p)
	}
	u.instMu.Unlock()
	terminate(procs, timeout, u.r.log, u.cfg.Name)
}

func terminate(procs []*spawn.Process, timeout time.Duration, log *slog.Logger, name string) {
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, p := range procs {
		select {
		case <-p.Done():
		case <-deadline.C:
			for _, q := range procs {
				if q.Signal(syscall.SIGKILL) == nil {
					log.Warn("runner: killed after stop timeout", "unit", name, "pid", q.Pid, "timeout", timeout)
				}
			}
			for _, q := range procs {
				q.Wait()
			}
			return
		}
	}
}

func (u *unit) closeFiles() {
	if u.svc != nil {
		u.svc.close()
	}
	for _, f := range []*os.File{u.sockFile, u.tcpFile} {
		if f != nil {
			f.Close()
		}
	}
	if u.logW != nil {
		u.logW.Close()
		// EOF comes once every writer is gone; a process that escaped the
		// stop (a daemonized grandchild) must not hold the runner up.
		select {
		case <-u.logDone:
		case <-time.After(time.Second):
			u.logR.Close()
			<-u.logDone
		}
	}
}

// Run starts the runner, serves until ctx is done, then stops it.
func Run(ctx context.Context, opts Options) error {
	r, err := New(opts)
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	r.log.Info("runner: stopping")
	return r.Stop()
}

// setup creates the unit's sockets, log pipe, credentials and state dir.
func (u *unit) setup() error {
	r := u.r
	name := u.cfg.Name
	if err := u.startLog(); err != nil {
		return err
	}
	if err := r.installCredentials(u); err != nil {
		return err
	}
	if u.cfg.StateDirectory {
		if err := r.stateDirectory(u); err != nil {
			return err
		}
	}
	if u.cfg.PublicDirectory != "" {
		if err := r.publicDirectory(u); err != nil {
			return err
		}
	}
	if !u.cfg.NoSocket {
		path := r.SocketPath(name)
		l, err := rpc.Listen(path, os.FileMode(u.cfg.Socket.Mode))
		if err != nil {
			return fmt.Errorf("runner: unit %s: %w", name, err)
		}
		u.listener = l
		if r.root {
			uid, gid, err := r.ownerIDs(u.cfg.Socket.User, u.cfg.Socket.Group)
			if err != nil {
				return fmt.Errorf("runner: unit %s: %w", name, err)
			}
			if err := os.Lchown(path, uid, gid); err != nil {
				return fmt.Errorf("runner: unit %s: socket owner: %w", name, err)
			}
		}
		if !u.cfg.Accept {
			if u.sockFile, err = unpolledFile(l, path); err != nil {
				l.Close()
				return fmt.Errorf("runner: unit %s: socket fd: %w", name, err)
			}
			// Only the children accept here; the listener would keep the
			// socket in the runner's epoll set, and every connection to
			// the helper would wake the runner too (a wake per call on
			// the machine the call runs on). The path goes at stop.
			l.SetUnlinkOnClose(false)
			l.Close()
			u.listener, u.sockPath = nil, path
		}
	}
	if u.cfg.TCP != "" {
		l, err := net.Listen("tcp", u.cfg.TCP)
		if err != nil {
			return fmt.Errorf("runner: unit %s: %w", name, err)
		}
		u.tcp = l
		if u.tcpFile, err = l.(*net.TCPListener).File(); err != nil {
			return fmt.Errorf("runner: unit %s: tcp fd: %w", name, err)
		}
		r.log.Info("runner: listening", "unit", name, "tcp", l.Addr().String())
	}
	return nil
}

// TCPAddr is the address a unit's TCP socket is bound to ("" if none);
// with port 0 in the config it tells which port was picked.
func (r *Runner) TCPAddr(name string) string {
	if u := r.units[name]; u != nil && u.tcp != nil {
		return u.tcp.Addr().String()
	}
	return ""
}

// MainPID is an Accept=no unit's current main process (0 if none).
func (r *Runner) MainPID(name string) int {
	if u := r.units[name]; u != nil && u.svc != nil {
		return u.svc.mainPID()
	}
	return 0
}

// Starts counts how often an Accept=no unit's process was started.
func (r *Runner) Starts(name string) int {
	if u := r.units[name]; u != nil && u.svc != nil {
		return u.svc.startCount()
	}
	return 0
}

// StoredFDs lists the names in a unit's fd store, in order.
func (r *Runner) StoredFDs(name string) []string {
	if u := r.units[name]; u != nil && u.svc != nil && u.svc.store != nil {
		return u.svc.store.names()
	}
	return nil
}

// lockDir takes an exclusive lock on the runtime directory, so a second
// runner does not replace the first one's sockets.
func (r *Runner) lockDir() error {
	p := filepath.Join(r.opts.RuntimeDir, ".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("runner: lock %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("runner: %s is in use by another `sluice run`: %w", r.opts.RuntimeDir, err)
	}
	r.lock = f
	return nil
}

// unpolledFile is a copy of l's socket as an *os.File that is not in the
// runner's netpoller: a blocking descriptor (os.NewFile registers only
// non-blocking ones). The flag is the socket's, shared with every copy;
// the children make theirs non-blocking again as they take it
// (net.FileListener), which leaves this file alone: the runner only
// passes it on.
func unpolledFile(l *net.UnixListener, path string) (*os.File, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if nfd, serr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); serr == nil {
			if serr = unix.SetNonblock(nfd, false); serr != nil {
				unix.Close(nfd)
			}
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return os.NewFile(uintptr(nfd), path), nil
}
