// Package suiterun runs the whole sluice suite the way `sluice run` does
// on a machine without systemd, for tests that need every component live
// at once under its real service manager (faults, load): it builds the
// real binaries, writes a runner config on a free loopback port, starts the
// real `sluice run` as a child process and hands out rpc clients made from
// the manifest the runner wrote, and a WebSocket "browser".
//
// The runner is a separate process rather than package runner inside the
// test, so that killing "the runner's children" means exactly what it
// would in production: it reaps, restarts and hands back its fd store, and
// the test only sees the sockets and /proc.
package suiterun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/revoke"
	"sluice/internal/testbuf"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/runner"
)

// Wait bounds every wait here so a broken component fails a test instead
// of hanging it; nothing measures against it.
var Wait = 30 * time.Second

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// Build builds every sluice binary into bin: the runner with cgo (its
// spawn uses clone(2) through C) and sluice-login with cgo (PAM), the
// other helpers and the frontend without, as `make build` does.
func Build(bin string) error {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := buildWeb(); err != nil {
		return err
	}
	for _, b := range []struct {
		cgo  string
		pkgs []string
	}{
		{"1", []string{"sluice/cmd/sluice", "sluice/helpers/shell/login/cmd/sluice-login"}},
		{"0", []string{"sluice/cmd/sluicectl", "sluice/helpers/auth/cmd/sluice-auth", "sluice/helpers/policy/cmd/sluice-policy",
			"sluice/helpers/shell/cmd/sluice-shell", "sluice/helpers/ptystore/cmd/sluice-ptystore",
			"sluice/helpers/hangup/cmd/sluice-hangup", "sluice/helpers/record/cmd/sluice-record", "sluice/frontend/cmd/sluice-frontend"}},
	} {
		cmd := exec.Command(goTool(), append([]string{"build", "-o", bin + "/"}, b.pkgs...)...)
		cmd.Dir = Root()
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("suiterun: go build %v: %v\n%s", b.pkgs, err, out)
		}
	}
	return nil
}

// Binaries returns a directory of built binaries: $SLUICE_TEST_BIN if set
// (say, bin/ after `make build`), else a fresh Build into dir/bin.
func Binaries(dir string) (string, error) {
	if b := os.Getenv("SLUICE_TEST_BIN"); b != "" {
		return filepath.Abs(b)
	}
	bin := filepath.Join(dir, "bin")
	return bin, Build(bin)
}

// buildWeb makes sure the page's npm assets are there for go:embed, as
// `make web` does; a checkout that ran `make build` has them already.
func buildWeb() error {
	web := filepath.Join(Root(), "frontend", "web")
	if _, err := os.Stat(filepath.Join(web, "dist", "xterm.js")); err == nil {
		return nil
	}
	for _, args := range [][]string{{"npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"}, {"npm", "run", "--silent", "build"}} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = web
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("suiterun: %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Options of one suite.
type Options struct {
	Dir    string // empty: a new temp dir, removed by Stop
	Bin    string // built binaries (Build); required
	Policy string // policy file text; default PolicyAllowRoot
	// Tweak edits the runner config before it is written (extra flags,
	// connection caps).
	Tweak func(c RawConfig)
	// FreshRootHome runs the runner, and so every unit and login shell,
	// in its own mount namespace with an empty tmpfs on /root: root's
	// login shells then read only /etc's profile, not whatever a
	// developer's dotfiles do (pyenv's rehash lock, for one, stalls
	// twenty root shells starting at once for half a minute). The host
	// is not touched.
	FreshRootHome bool
}

// PolicyAllowRoot lets every user a test registers open root shells on
// the host, which is what fault and load tests need; refusals are the
// chain and hostile tests' business.
const PolicyAllowRoot = "allow * as root on .host\n"

// Suite is one running `sluice run`.
type Suite struct {
	Dir, Bin, RunDir, StateDir string
	Port                       int
	Origin                     string // http://localhost:PORT, what a browser sends
	URL                        string // ws://127.0.0.1:PORT/ws
	PolicyPath                 string // the policy file the policy helper reads and ptystore watches
	Manifest                   *buildid.Manifest
	Log                        *testbuf.Buffer // the runner's stderr: its own log and every unit's
	Stdout                     *testbuf.Buffer // the runner's stdout: what `make run` shows a person

	ownDir bool
	cmd    *exec.Cmd
	exited chan struct{}
}

// freePort asks the kernel for a free loopback port; the runner binds it
// a moment later.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RawConfig is a runner config as JSON values, so that editing it keeps
// every field, including ones this package does not know about.
type RawConfig map[string]any

// Unit returns the unit named name (nil if none); changes to it change c.
func (c RawConfig) Unit(name string) map[string]any {
	units, _ := c["units"].([]any)
	for _, u := range units {
		if m, ok := u.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

// AppendExec adds arguments to a unit's command line.
func (c RawConfig) AppendExec(unit string, args ...string) {
	u := c.Unit(unit)
	if u == nil {
		return
	}
	exec, _ := u["exec"].([]any)
	for _, a := range args {
		exec = append(exec, a)
	}
	u["exec"] = exec
}

// Config is the runner's embedded default config, changed only where a
// test on one machine must: a free loopback port, the auth helper told
// that port's origin, the policy file, root (the test process) allowed on
// the web protocols besides the frontend's uid so a test can call the
// helpers as the frontend does, no sign-in rate limit, no enrollment hook,
// and a short stop.
func Config(port int, policyPath string) (RawConfig, error) {
	raw, err := runner.DefaultConfigJSON()
	if err != nil {
		return nil, err
	}
	var c RawConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("suiterun: default config: %w", err)
	}
	delete(c, "on_ready")
	c["stop_timeout"] = "3s"
	if u := c.Unit(msg.Frontend); u != nil {
		u["tcp"] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	// Repeatable and last-wins flags respectively, so these hold whatever
	// the default says.
	c.AppendExec(msg.Auth, "--origin", fmt.Sprintf("http://localhost:%d", port))
	c.AppendExec(msg.Policy, "--policy", policyPath)
	c.AppendExec(msg.PtyStore, "--policy-file", policyPath)
	// Every test signs in from 127.0.0.1, dozens of times a minute; the
	// per-address rate is tested on its own (frontend/preauth_test.go).
	c.AppendExec(msg.Frontend, "--signin-rate", "0")
	units, _ := c["units"].([]any)
	for _, u := range units {
		m, _ := u.(map[string]any)
		env, _ := m["env"].(map[string]any)
		for k, v := range env {
			if s, ok := v.(string); ok && strings.HasPrefix(k, "SLUICE_ALLOW_WEB_TO_") {
				env[k] = s + ",uid:0"
			}
		}
	}
	return c, nil
}

// Start writes the config and starts `sluice run`; it returns once the
// runner has printed the URL, which it does after every notify unit said
// READY=1.
func Start(o Options) (*Suite, error) {
	s := &Suite{Dir: o.Dir, Bin: o.Bin, Log: &testbuf.Buffer{}, Stdout: &testbuf.Buffer{}}
	if s.Dir == "" {
		d, err := os.MkdirTemp("", "sluice-suiterun-")
		if err != nil {
			return nil, err
		}
		s.Dir, s.ownDir = d, true
	} else if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	// Units run as uids of their own: they must reach the policy file.
	os.Chmod(s.Dir, 0o755)
	s.RunDir, s.StateDir = filepath.Join(s.Dir, "run"), filepath.Join(s.Dir, "state")
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.Port = port
	s.Origin = fmt.Sprintf("http://localhost:%d", port)
	s.URL = fmt.Sprintf("ws://127.0.0.1:%d/ws", port)
	pol := o.Policy
	if pol == "" {
		pol = PolicyAllowRoot
	}
	polPath := filepath.Join(s.Dir, "policy")
	s.PolicyPath = polPath
	if err := os.WriteFile(polPath, []byte(pol), 0o644); err != nil {
		return nil, err
	}
	cfg, err := Config(port, polPath)
	if err != nil {
		return nil, err
	}
	if o.Tweak != nil {
		o.Tweak(cfg)
	}
	cfgPath := filepath.Join(s.Dir, "config.json")
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	// The runner is the judge of the result; a config it would refuse is
	// this package's bug, said early.
	if _, err := runner.ParseConfig(b); err != nil {
		return nil, fmt.Errorf("suiterun: written config: %w", err)
	}

	argv := []string{filepath.Join(s.Bin, "sluice"), "run", "--config", cfgPath,
		"--bin-dir", s.Bin, "--runtime-dir", s.RunDir, "--state-dir", s.StateDir}
	if o.FreshRootHome {
		// unshare and sh exec in turn, so the runner keeps this pid.
		argv = append([]string{"unshare", "--mount", "--propagation", "private", "--",
			"/bin/sh", "-c", `mount -t tmpfs -o mode=0700 sluice-root-home /root && exec "$@"`, "sh"}, argv...)
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
	s.cmd.Stderr = s.Log
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// If the test process dies the runner gets SIGTERM and stops its units.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.exited = make(chan struct{})
	announced := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			s.Stdout.Write(append(sc.Bytes(), '\n'))
			if strings.HasPrefix(sc.Text(), "sluice: open ") {
				once.Do(func() { close(announced) })
			}
		}
	}()
	go func() { s.cmd.Wait(); close(s.exited) }()
	select {
	case <-announced:
	case <-s.exited:
		return nil, fmt.Errorf("suiterun: sluice run exited before it was up:\n%s", s.Log)
	case <-time.After(Wait):
		s.Stop()
		return nil, fmt.Errorf("suiterun: sluice run not up within %v:\n%s", Wait, s.Log)
	}
	s.Manifest, err = buildid.Load(filepath.Join(s.RunDir, "build-ids.json"))
	if err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.publishRevocations(cfg); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// publishRevocations does what the on_ready enrollment Config removes
// does first: it calls auth, whose first start publishes the revocation
// list into its public directory (PublishIfMissing). Policy and ptystore
// refuse every grant until that list is there, and tests sign their own
// grants with the key rather than sign in, so without this call a suite
// would fail closed until some test happened to reach auth.
func (s *Suite) publishRevocations(cfg RawConfig) error {
	u := cfg.Unit(msg.Auth)
	dir, _ := u["public_directory"].(string)
	if dir == "" {
		return nil
	}
	cl, err := s.Client(msg.Frontend, msg.ProtoWebToAuth)
	if err != nil {
		return err
	}
	cl.Timeout = Wait
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if _, err := Call(ctx, cl, msg.OpLoginBegin, msg.LoginBegin{}, nil, &msg.LoginBeginReply{}); err != nil {
		return fmt.Errorf("suiterun: first call to auth: %w", err)
	}
	// Auth publishes before it serves: the answer means the list is there.
	path := filepath.Join(s.StateDir, dir, revoke.FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("suiterun: auth answered but published no revocation list: %w\n%s", err, s.Log)
	}
	return nil
}

// Stop ends the runner with SIGTERM (it stops its units) and removes the
// directory if Start made it.
func (s *Suite) Stop() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(Wait):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
			err = errors.New("suiterun: sluice run did not stop on SIGTERM")
		}
	}
	if s.ownDir {
		os.RemoveAll(s.Dir)
	}
	return err
}

// RunnerPID is the runner's pid.
func (s *Suite) RunnerPID() int { return s.cmd.Process.Pid }

// Client returns an rpc client speaking protocol proto as component self,
// with the hellos the runner's manifest records. Build IDs name binaries;
// the kernel-checked uid (root here, allowed by Config) is what admits.
func (s *Suite) Client(self, proto string) (*rpc.Client, error) {
	p, ok := msg.Lookup(proto)
	if !ok {
		return nil, fmt.Errorf("suiterun: no protocol %q", proto)
	}
	mine, err := s.Manifest.Lookup(self, msg.Intent(p, "client"))
	if err != nil {
		return nil, err
	}
	peer, err := s.Manifest.Lookup(p.Server, msg.Intent(p, "server"))
	if err != nil {
		return nil, err
	}
	return &rpc.Client{Path: filepath.Join(s.RunDir, p.Server+".sock"),
		Hello:  rpc.Hello{Intent: mine.Intent, BuildID: mine.BuildID},
		Expect: rpc.Hello{Intent: peer.Intent, BuildID: peer.BuildID}}, nil
}

// Call makes one request: op with args, the reply decoded into reply.
func Call(ctx context.Context, cl *rpc.Client, op string, args any, fds []*os.File, reply any) ([]*os.File, error) {
	raw, err := msgpack.Marshal(args)
	if err != nil {
		return nil, err
	}
	return cl.Call(ctx, msg.Request{Op: op, Args: raw}, fds, reply)
}

// Enroll makes a registration token for user over "admin to auth".
func (s *Suite) Enroll(ctx context.Context, user string) (string, error) {
	cl, err := s.Client(msg.Admin, msg.ProtoAdminToAuth)
	if err != nil {
		return "", err
	}
	// Setup, not what a test measures: a loaded machine may take long.
	cl.Timeout = Wait
	var rep msg.EnrollReply
	if _, err := Call(ctx, cl, msg.OpEnroll, msg.Enroll{User: user}, nil, &rep); err != nil {
		return "", fmt.Errorf("suiterun: enroll %s: %w", user, err)
	}
	return rep.Token, nil
}

// Sessions lists every held session over "admin to ptystore".
func (s *Suite) Sessions(ctx context.Context) ([]msg.SessionInfo, error) {
	cl, err := s.Client(msg.Admin, msg.ProtoAdminToPtyStore)
	if err != nil {
		return nil, err
	}
	cl.Timeout = Wait
	var rep msg.PtyListReply
	if _, err := Call(ctx, cl, msg.OpPtyList, msg.PtyList{}, nil, &rep); err != nil {
		return nil, err
	}
	return rep.Sessions, nil
}

// Proc is one child of the runner.
type Proc struct {
	PID  int
	Name string // executable base name, e.g. sluice-auth
}

// Children lists the runner's live children (units and Accept=yes
// instances) from /proc: every thread's children file, since the kernel
// lists a child under the thread that forked it.
func (s *Suite) Children() []Proc {
	var out []Proc
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", s.RunnerPID()))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil {
				continue // gone, or a zombie
			}
			out = append(out, Proc{PID: pid, Name: filepath.Base(exe)})
		}
	}
	return out
}

// WaitChild waits for a child running binary name whose pid is not in
// skip, and returns its pid.
func (s *Suite) WaitChild(name string, skip ...int) (int, error) {
	deadline := time.Now().Add(Wait)
	for time.Now().Before(deadline) {
	next:
		for _, p := range s.Children() {
			if p.Name != name {
				continue
			}
			for _, k := range skip {
				if k == p.PID {
					continue next
				}
			}
			return p.PID, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("suiterun: no %s child of the runner within %v", name, Wait)
}

// Kill sends SIGKILL to pid and waits until the runner has reaped it.
func (s *Suite) Kill(pid int) error {
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		return fmt.Errorf("suiterun: kill %d: %w", pid, err)
	}
	deadline := time.Now().Add(Wait)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("suiterun: %d still there %v after SIGKILL", pid, Wait)
}

// SocketFDs counts the sockets a process has open.
func SocketFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// RaiseNoFile lifts RLIMIT_NOFILE's soft limit to the hard one.
func RaiseNoFile() error {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	r.Cur = r.Max
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
}
