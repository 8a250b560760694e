// Package fleetenv brings up a fleet on this machine for tests: a gateway
// suite with its fleet helper, and hosts, each a network namespace with a
// real sshd and a sluice suite of its own (docs/fleet.md). tests/fleet
// speaks to it as the frontend would; tests/browser drives its page.
package fleetenv

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/helpers/fleet"
	"sluice/internal/hostgrant"
	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// RelayUser is the relay account the test makes: one account, as on
// every host of a real fleet; all hosts share this machine's passwd.
const RelayUser = "sluice-relay-t"

// PlainUser is the account Options.Baseline adds to every host's sshd: a
// plain login with a key of the test's own (no forced command), for the
// `ssh -t host` baselines of the fleet's benchmarks.
const PlainUser = "sluice-plain-t"

// Env is a gateway and its hosts: each host a network namespace with its
// own sshd, and its own sluice suite under sluice run; the gateway's
// fleet helper (and so its ssh) in a namespace of its own, linked to each
// host by a veth pair. Nothing listens outside these namespaces but the
// suites' own loopback frontends.
type Env struct {
	t        testing.TB
	opt      Options
	Dir, Bin string
	GW       *suiterun.Suite
	GWNS     string
	HostKey  ed25519.PrivateKey // the gateway auth's host grant key (the test reads it to forge)
	FleetDir string
	fleetCmd *exec.Cmd
	Hosts    map[string]*Host
	RelayUID int
	// PlainKey is the private key PlainUser logs in with (Options.Baseline).
	PlainKey string
	hostKey  string // the host grant key's file, which auth reads
}

// Options say what the fleet is for.
type Options struct {
	// Policies is each host's policy file, by host name.
	Policies map[string]string
	// Baseline: each host's sshd also lets PlainUser in with PlainKey,
	// for plain `ssh -t host` (Env.PlainSSH) through the same sshd.
	Baseline bool
	// Page: the gateway's frontend runs with --fleet and the fleet helper
	// serves "web to fleet" to the frontend's uid, for a browser; else
	// only root (the test) calls the fleet helper.
	Page bool
	// GatewayAdmin names the hosts whose ptystore takes the gateway
	// admins' calls (--gateway-admin): sluicectl sessions fleet-wide.
	GatewayAdmin map[string]bool
}

// Host is one host of the fleet.
type Host struct {
	Name, NS, Addr string
	Dir            string
	Suite          *suiterun.Suite
	sshd           *exec.Cmd
	sshdCfg        string
	HostPub        string // the sshd's public host key line
}

func Need(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: network namespaces, sshd, sluice run as root")
	}
	for _, p := range []string{"ip", "ssh", "ssh-keygen", "/usr/sbin/sshd"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s (scripts/deps.sh installs openssh-server, iproute2)", p)
		}
	}
}

func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ensureRelayUser(t testing.TB) int { return ensureUser(t, RelayUser) }

func ensureUser(t testing.TB, name string) int {
	if _, err := user.Lookup(name); err != nil {
		Run(t, "useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh", name)
	}
	// No password, but not locked ("!"): sshd refuses locked accounts.
	Run(t, "usermod", "-p", "*", name)
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	return uid
}

// relayBin is sluice-relay as a host installs it, in a root-owned
// directory every uid can traverse (/usr/libexec/sluice on a host): the
// relay account cannot reach bin/ of a checkout in /root or a 0700 home,
// and sshd runs the forced command as that account.
func (e *Env) relayBin() string {
	e.t.Helper()
	dir := filepath.Join(e.Dir, "libexec")
	dst := filepath.Join(dir, "sluice-relay")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(e.Bin, "sluice-relay"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dst
}

// newEnv starts the gateway and hosts h1..hN with the given policies.
func New(t testing.TB, o Options) *Env {
	policies := o.Policies
	Need(t)
	d, err := os.MkdirTemp("", "sluice-fleet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	e := &Env{t: t, opt: o, Dir: d, Hosts: map[string]*Host{}}
	// Units and the relay account run as uids of their own.
	os.Chmod(e.Dir, 0o755)
	if e.Bin, err = suiterun.Binaries(e.Dir); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"sluice-fleet", "sluice-relay"} {
		if _, err := os.Stat(filepath.Join(e.Bin, b)); err != nil {
			t.Skipf("%s not built (make build)", b)
		}
	}
	e.RelayUID = ensureRelayUser(t)
	os.MkdirAll("/run/sshd", 0o755)

	// The gateway's host grant key: auth (a dynamic user) reads it.
	keyPath := filepath.Join(e.Dir, "host-grant.key")
	if e.HostKey, err = hostgrant.LoadOrCreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	os.Chmod(keyPath, 0o644)
	pubPath := filepath.Join(e.Dir, "gateway.pub")
	if err := os.WriteFile(pubPath, []byte(hostgrant.FormatPublic(e.HostKey.Public().(ed25519.PublicKey))), 0o644); err != nil {
		t.Fatal(err)
	}
	e.hostKey = keyPath
	if o.Baseline {
		ensureUser(t, PlainUser)
		e.PlainKey = filepath.Join(e.Dir, "plain_ed25519")
		Run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", e.PlainKey)
	}
	if e.GW, err = e.startGateway(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.GW.Stop() })

	tag := fmt.Sprintf("slf%d", os.Getpid()%100000)
	e.GWNS = tag + "gw"
	Run(t, "ip", "netns", "add", e.GWNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", e.GWNS).Run() })
	Run(t, "ip", "-n", e.GWNS, "link", "set", "lo", "up")
	e.startFleet()

	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for i, n := range names {
		h := &Host{Name: n, NS: tag + n, Addr: fmt.Sprintf("10.231.%d.2", i+1), Dir: filepath.Join(e.Dir, n)}
		e.Hosts[n] = h
		os.MkdirAll(h.Dir, 0o755)
		Run(t, "ip", "netns", "add", h.NS)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.NS).Run() })
		gwIf, hIf := fmt.Sprintf("%sg%d", tag, i+1), fmt.Sprintf("%sh%d", tag, i+1)
		Run(t, "ip", "link", "add", gwIf, "netns", e.GWNS, "type", "veth", "peer", "name", hIf, "netns", h.NS)
		Run(t, "ip", "-n", e.GWNS, "addr", "add", fmt.Sprintf("10.231.%d.1/24", i+1), "dev", gwIf)
		Run(t, "ip", "-n", e.GWNS, "link", "set", gwIf, "up")
		Run(t, "ip", "-n", h.NS, "addr", "add", h.Addr+"/24", "dev", hIf)
		Run(t, "ip", "-n", h.NS, "link", "set", hIf, "up")
		Run(t, "ip", "-n", h.NS, "link", "set", "lo", "up")
		wg.Add(1)
		go func(h *Host, pol string) {
			defer wg.Done()
			s, err := suiterun.Start(suiterun.Options{Dir: filepath.Join(h.Dir, "suite"), Bin: e.Bin, Policy: pol, FreshRootHome: true,
				Tweak: func(c suiterun.RawConfig) {
					hostTweak(c, h.Name, pubPath, e.RelayUID)
					if o.GatewayAdmin[h.Name] {
						c.AppendExec(msg.PtyStore, "--gateway-admin")
					}
				}})
			if err != nil {
				errs <- fmt.Errorf("host %s: %w", h.Name, err)
				return
			}
			h.Suite = s
		}(h, policies[n])
	}
	wg.Wait()
	for _, h := range e.Hosts {
		if h.Suite != nil {
			t.Cleanup(func() { h.Suite.Stop() })
		}
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for _, h := range e.Hosts {
		e.startSSHD(h)
	}
	e.writeHosts()
	return e
}

// hostTweak puts a host suite in the fleet: policy and ptystore serve the
// gateway route to the relay account. The sockets are opened to every
// uid (0666) because the runner gives a socket one owner and one group,
// both taken; the helpers' allowlists (the kernel's uid) are then the
// one gate, and systemd's SocketGroup= is the second (docs/fleet.md).
func hostTweak(c suiterun.RawConfig, name, pub string, relayUID int) {
	for _, unit := range []string{msg.Policy, msg.PtyStore} {
		c.AppendExec(unit, "--fleet-host", name, "--gateway-key", pub)
		u := c.Unit(unit)
		env, _ := u["env"].(map[string]any)
		key := "SLUICE_ALLOW_GATEWAY_TO_" + strings.ToUpper(unit)
		env[key] = fmt.Sprintf("uid:%d", relayUID)
		sock, _ := u["socket"].(map[string]any)
		sock["mode"] = "0666"
	}
}

// startGateway starts the gateway's suite under its runner, in the same
// directory each time: a restart keeps auth's state (passkeys, keys).
func (e *Env) startGateway() (*suiterun.Suite, error) {
	return suiterun.Start(suiterun.Options{Dir: filepath.Join(e.Dir, "gw"), Bin: e.Bin, Tweak: func(c suiterun.RawConfig) {
		c.AppendExec(msg.Auth, "--host-grant-key", e.hostKey)
		if e.opt.Page {
			c.AppendExec(msg.Frontend, "--fleet")
		}
	}})
}

// StopGateway stops the gateway's whole suite: its fleet helper (and so
// every ssh stream) and its runner (auth, frontend, ...). The hosts are
// not touched. StartGateway starts both again with the same state.
func (e *Env) StopGateway() {
	t := e.t
	t.Helper()
	e.fleetCmd.Process.Signal(syscall.SIGTERM)
	e.fleetCmd.Wait()
	if err := e.GW.Stop(); err != nil {
		t.Fatalf("gateway stop: %v", err)
	}
}

// StartGateway starts what StopGateway stopped.
func (e *Env) StartGateway() {
	t := e.t
	t.Helper()
	gw, err := e.startGateway()
	if err != nil {
		t.Fatalf("gateway start: %v", err)
	}
	e.GW = gw
	e.startFleet()
}

func (e *Env) startFleet() {
	t := e.t
	e.FleetDir = filepath.Join(e.Dir, "fleet")
	sock := filepath.Join(e.GW.RunDir, "fleet.sock")
	mode, web := "0600", "uid:0"
	if e.opt.Page {
		// The runner's frontend has a dynamic uid: the allowlist names
		// it, and the socket is open to all (as the hosts' are, see
		// hostTweak) since the runner makes no socket for this helper.
		uid := e.frontendUID()
		mode, web = "0666", fmt.Sprintf("uid:0,uid:%d", uid)
	}
	cmd := exec.Command("ip", "netns", "exec", e.GWNS, filepath.Join(e.Bin, "sluice-fleet"),
		"--listen", sock, "--mode", mode, "--dir", e.FleetDir,
		"--allow", msg.ProtoWebToFleet+"="+web, "--allow", msg.ProtoAdminToFleet+"=uid:0")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SLUICE_RUNTIME_DIR=" + e.GW.RunDir}
	log, _ := os.OpenFile(filepath.Join(e.Dir, "fleet.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	os.Remove(sock) // a restart's: the new helper's is the one waited for
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.fleetCmd = cmd
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	waitFile(t, sock)
}

// frontendUID is the uid the gateway's runner gave its frontend.
func (e *Env) frontendUID() int {
	pid, err := e.GW.WaitChild("sluice-frontend")
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			uid, err := strconv.Atoi(f[1])
			if err != nil {
				e.t.Fatal(err)
			}
			return uid
		}
	}
	e.t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

func waitFile(t testing.TB, p string) {
	t.Helper()
	deadline := time.Now().Add(suiterun.Wait)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", p)
}

func (e *Env) startSSHD(h *Host) {
	t := e.t
	hk := filepath.Join(h.Dir, "ssh_host_ed25519_key")
	Run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk)
	pub, _ := os.ReadFile(hk + ".pub")
	h.HostPub = strings.TrimSpace(string(pub))
	fleetPub, err := os.ReadFile(filepath.Join(e.FleetDir, fleet.KeyFile+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	relayLog := filepath.Join(h.Dir, "relay.log")
	os.WriteFile(relayLog, nil, 0o600)
	os.Chown(relayLog, e.RelayUID, -1)
	// A file per account (%u): a key listed for PlainUser must not log
	// in as the relay account without its forced command.
	ak := func(user string) string { return filepath.Join(h.Dir, "authorized_keys."+user) }
	line := fmt.Sprintf("restrict,command=\"%s --host %s --runtime-dir %s --log %s\" %s",
		e.relayBin(), h.Name, h.Suite.RunDir, relayLog, strings.TrimSpace(string(fleetPub)))
	if err := os.WriteFile(ak(RelayUser), []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	users := RelayUser
	if e.PlainKey != "" {
		pub, err := os.ReadFile(e.PlainKey + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ak(PlainUser), pub, 0o644); err != nil {
			t.Fatal(err)
		}
		users += " " + PlainUser
	}
	h.sshdCfg = filepath.Join(h.Dir, "sshd_config")
	cfg := strings.Join([]string{
		"ListenAddress " + h.Addr, "Port 22", "HostKey " + hk, "PidFile " + filepath.Join(h.Dir, "sshd.pid"),
		"AuthorizedKeysFile " + ak("%u"), "StrictModes no", "UsePAM no", "PasswordAuthentication no",
		"KbdInteractiveAuthentication no", "PermitRootLogin no", "AllowUsers " + users,
		"PrintMotd no", "PrintLastLog no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", "",
	}, "\n")
	if err := os.WriteFile(h.sshdCfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.RunSSHD(h)
}

func (e *Env) RunSSHD(h *Host) {
	t := e.t
	cmd := exec.Command("ip", "netns", "exec", h.NS, "/usr/sbin/sshd", "-D", "-e", "-f", h.sshdCfg)
	log, _ := os.OpenFile(filepath.Join(h.Dir, "sshd.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.sshd = cmd
	t.Cleanup(func() { e.StopSSHD(h) })
	// Up when it accepts: ask its port from inside the namespace.
	deadline := time.Now().Add(suiterun.Wait)
	for time.Now().Before(deadline) {
		if exec.Command("ip", "netns", "exec", e.GWNS, "sh", "-c", "exec 3<>/dev/tcp/"+h.Addr+"/22").Run() == nil ||
			exec.Command("ip", "netns", "exec", e.GWNS, "bash", "-c", "exec 3<>/dev/tcp/"+h.Addr+"/22").Run() == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sshd of %s not up", h.Name)
}

// PlainSSH is `ssh -tt` from the gateway's namespace to h as PlainUser
// running command: the same sshd, ssh binary and network path as the
// fleet's own ssh, for baselines. The caller gives it a terminal.
func (e *Env) PlainSSH(h *Host, command string) *exec.Cmd {
	if e.PlainKey == "" {
		e.t.Fatal("fleetenv: PlainSSH needs Options.Baseline")
	}
	cmd := exec.Command("ip", "netns", "exec", e.GWNS, "ssh", "-F", "/dev/null", "-tt",
		"-i", e.PlainKey, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile="+filepath.Join(e.FleetDir, fleet.KnownHostsFile), "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias="+h.Name, "-o", "BatchMode=yes",
		"-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "EscapeChar=none", "-o", "LogLevel=ERROR",
		"-l", PlainUser, "--", h.Addr, command)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + e.Dir, "LANG=C"}
	return cmd
}

// stopSSHD ends the host's sshd and every session it runs (its process
// group: the listener; sessions are in groups of their own, so also by
// the pid file's children).
func (e *Env) StopSSHD(h *Host) {
	if h.sshd == nil || h.sshd.Process == nil {
		return
	}
	// ip netns exec execs sshd, so this pid is the listener's; its
	// connections are its descendants, ended by pid.
	for _, pid := range descendants(h.sshd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	syscall.Kill(-h.sshd.Process.Pid, syscall.SIGKILL)
	h.sshd.Wait()
	h.sshd = nil
}

// writeHosts is what sluicectl hosts add writes on the gateway.
func (e *Env) writeHosts() {
	var hs fleet.Hosts
	var kh strings.Builder
	for _, h := range e.Hosts {
		hs.Hosts = append(hs.Hosts, msg.FleetHost{Name: h.Name, Address: h.Addr, Port: 22, User: RelayUser})
		f := strings.Fields(h.HostPub)
		fmt.Fprintf(&kh, "%s %s %s\n", h.Name, f[0], f[1])
	}
	if err := hs.Save(e.FleetDir); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.FleetDir, fleet.KnownHostsFile), []byte(kh.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// signIn registers a passkey for user at the gateway and signs in once.
func (e *Env) SignIn(ctx context.Context, name string) msg.Grant {
	t := e.t
	tok, err := e.GW.Enroll(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	web, err := e.GW.Client(msg.Frontend, msg.ProtoWebToAuth)
	if err != nil {
		t.Fatal(err)
	}
	a := softauthn.New("localhost", e.GW.Origin)
	var b msg.RegisterBeginReply
	if _, err := suiterun.Call(ctx, web, msg.OpRegisterBegin, msg.RegisterBegin{Token: tok}, nil, &b); err != nil {
		t.Fatal(err)
	}
	cred, err := a.Register(b.Options)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := suiterun.Call(ctx, web, msg.OpRegisterFinish, msg.RegisterFinish{Token: tok, State: b.State, Credential: cred}, nil, &msg.RegisterFinishReply{}); err != nil {
		t.Fatal(err)
	}
	var lb msg.LoginBeginReply
	if _, err := suiterun.Call(ctx, web, msg.OpLoginBegin, msg.LoginBegin{}, nil, &lb); err != nil {
		t.Fatal(err)
	}
	as, err := a.Login(lb.Options)
	if err != nil {
		t.Fatal(err)
	}
	var lf msg.LoginFinishReply
	if _, err := suiterun.Call(ctx, web, msg.OpLoginFinish, msg.LoginFinish{State: lb.State, Assertion: as}, nil, &lf); err != nil {
		t.Fatal(err)
	}
	return lf.Grant
}

// hostGrant asks the gateway's auth, as the frontend does.
func (e *Env) HostGrant(ctx context.Context, g msg.Grant, host string) msg.HostGrant {
	web, err := e.GW.Client(msg.Frontend, msg.ProtoWebToAuth)
	if err != nil {
		e.t.Fatal(err)
	}
	var r msg.HostGrantReply
	if _, err := suiterun.Call(ctx, web, msg.OpHostGrant, msg.HostGrantRequest{Grant: g, Host: host}, nil, &r); err != nil {
		e.t.Fatalf("host-grant %s: %v", host, err)
	}
	return r.HostGrant
}

func (e *Env) FleetClient(proto string) *rpc.Client {
	cl, err := e.GW.Client(map[string]string{msg.ProtoWebToFleet: msg.Frontend, msg.ProtoAdminToFleet: msg.Admin}[proto], proto)
	if err != nil {
		e.t.Fatal(err)
	}
	cl.Timeout = 30 * time.Second
	return cl
}

// open asks the fleet helper to open (create) or attach (get) a session.
func (e *Env) Open(ctx context.Context, host string, hg msg.HostGrant, op string, args any) (msg.FleetOpenReply, *os.File, error) {
	raw, _ := msgpack.Marshal(args)
	var rep msg.FleetOpenReply
	fds, err := suiterun.Call(ctx, e.FleetClient(msg.ProtoWebToFleet), msg.OpFleetOpen,
		msg.FleetCall{Host: host, Op: op, Args: raw, HostGrant: hg, Rows: 30, Cols: 100}, nil, &rep)
	if err != nil {
		return rep, nil, err
	}
	if len(fds) != 1 {
		e.t.Fatalf("fleet-open: %d fds", len(fds))
	}
	return rep, Pollable(e.t, fds[0]), nil
}

// pollable returns f as a non-blocking file in Go's poller, so read
// deadlines work on it (a received fd is blocking, and a read on it
// would wait past any deadline).
func Pollable(t testing.TB, f *os.File) *os.File {
	var nfd int
	var derr error
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { nfd, derr = unix.Dup(int(fd)) })
	}
	f.Close()
	if err == nil {
		err = derr
	}
	if err == nil {
		err = unix.SetNonblock(nfd, true)
	}
	if err != nil {
		t.Fatalf("pty fd: %v", err)
	}
	unix.CloseOnExec(nfd)
	return os.NewFile(uintptr(nfd), "gateway-pty")
}

// call carries one non-streaming call to a host helper.
func (e *Env) Call(ctx context.Context, host string, hg msg.HostGrant, service, op string, args, reply any) error {
	raw, _ := msgpack.Marshal(args)
	_, err := suiterun.Call(ctx, e.FleetClient(msg.ProtoWebToFleet), msg.OpFleetCall,
		msg.FleetCall{Host: host, Service: service, Op: op, Args: raw, HostGrant: hg}, nil, reply)
	return err
}

// Sluicectl runs the gateway's sluicectl as root, as an admin there does.
func (e *Env) Sluicectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(e.Bin, "sluicectl"), args...)
	cmd.Env = []string{"SLUICE_RUNTIME_DIR=" + e.GW.RunDir, "SLUICE_MANIFEST=" + filepath.Join(e.GW.RunDir, "build-ids.json"),
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *Env) Logs() string {
	var b strings.Builder
	f, _ := os.ReadFile(filepath.Join(e.Dir, "fleet.log"))
	fmt.Fprintf(&b, "--- fleet\n%s", f)
	for _, h := range e.Hosts {
		r, _ := os.ReadFile(filepath.Join(h.Dir, "relay.log"))
		s, _ := os.ReadFile(filepath.Join(h.Dir, "sshd.log"))
		fmt.Fprintf(&b, "--- %s relay\n%s--- %s sshd\n%s", h.Name, r, h.Name, s)
		if h.Suite != nil {
			fmt.Fprintf(&b, "--- %s suite\n%s", h.Name, Tail(h.Suite.Log.String(), 3000))
		}
	}
	return b.String()
}

// descendants lists pid's descendants from /proc.
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[i+1:])); len(f) > 2 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	want := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if want[pp] && !want[p] {
				want[p] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	return out
}

func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// KillFleet kills the gateway's fleet helper with SIGKILL, as a crash
// would, and waits for it; its ssh children are left as they are.
// StartFleet starts a new one with the same directory.
func (e *Env) KillFleet() {
	e.fleetCmd.Process.Kill()
	e.fleetCmd.Wait()
}

// StartFleet starts the gateway's fleet helper again (after KillFleet).
func (e *Env) StartFleet() { e.startFleet() }

// FleetPID is the running fleet helper's pid.
func (e *Env) FleetPID() int { return e.fleetCmd.Process.Pid }
