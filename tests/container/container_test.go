package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/grant"
	"sluice/internal/pty"
	"sluice/internal/ticket/tickettest"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/suite"
	"sluice/tests/ptytest"
)

// Host ids. None of them needs a passwd entry on the host: the kernel
// only deals in numbers.
const (
	hostWeb      = 210001 // plays the frontend
	hostAdmin    = 210002 // plays sluicectl
	hostStranger = 210003 // reaches every socket, mapped in no sandbox
	hostOutsider = 210004 // in no callers group: stopped at the socket
	hostImpostor = 1001   // the web caller's inside uid, as a host uid

	hostClients       = 216001 // may reach auth, policy, ptystore sockets (sluice-web)
	hostShellCallers  = 216002 // may reach the shell socket (sluice-shell-callers)
	hostHangupCallers = 216003 // may reach the hangup socket (ptystore's, as the runner gives it)
)

// Inside ids, the same numbers in every sandbox that maps them.
const (
	inRoot          = 0
	inHelper        = 100  // the helper, except shell's and hangup's, which run as inRoot
	inClients       = 300  // hostClients
	inShellCallers  = 301  // hostShellCallers
	inHangupCallers = 302  // hostHangupCallers
	inShellUser     = 1000 // the account shells are opened for
	inWeb           = 1001 // hostWeb
	inAdmin         = 1002 // hostAdmin
	inPolicy        = 1003 // the policy helper's host uid, in the shell sandbox
	inPtyStore      = 1004 // the ptystore helper's host uid, in the hangup sandbox
	inTTY           = 5    // group tty in the shell sandbox, as on Debian
)

// Each sandbox has its own block of host ids: inside id i of the sandbox
// is host base+i, for its own root, helper and shell account.
var hostBase = map[string]uint32{msg.Auth: 300000, msg.Policy: 310000, msg.Shell: 320000, msg.PtyStore: 330000, msg.Hangup: 340000}

// helpers is every sandboxed helper, in the order they start: a helper
// whose socket another's sandbox binds in starts first.
var helpers = []string{msg.Shell, msg.Hangup, msg.PtyStore, msg.Policy, msg.Auth}

func helperHostUID(name string) uint32 {
	if name == msg.Shell || name == msg.Hangup {
		return hostBase[name] + inRoot
	}
	return hostBase[name] + inHelper
}

var (
	web      = Caller{Name: "web", UID: hostWeb, GID: hostWeb, Groups: []uint32{hostClients}}
	admin    = Caller{Name: "admin", UID: hostAdmin, GID: hostAdmin, Groups: []uint32{hostClients}}
	stranger = Caller{Name: "stranger", UID: hostStranger, GID: hostStranger, Groups: []uint32{hostClients, hostShellCallers, hostHangupCallers}}
	impostor = Caller{Name: "impostor", UID: hostImpostor, GID: hostImpostor, Groups: []uint32{hostClients, hostShellCallers, hostHangupCallers}}
	outsider = Caller{Name: "outsider", UID: hostOutsider, GID: hostOutsider}
	hostRoot = Caller{Name: "host-root", UID: 0, GID: 0, Groups: []uint32{}}
	// The policy helper's own host account, calling shell and ptystore
	// (it puts every session) from outside.
	policyAccount = Caller{Name: "policy-account", UID: 310000 + inHelper, GID: 310000 + inHelper, Groups: []uint32{hostShellCallers, hostClients}}
	// The ptystore helper's own host account, calling hangup from outside.
	ptystoreAccount = Caller{Name: "ptystore-account", UID: 330000 + inHelper, GID: 330000 + inHelper, Groups: []uint32{hostHangupCallers}}
)

const policyFile = `# container test policy
allow alice as sh-user on .host
`

var env struct {
	skip      string
	base      string
	exe       string // this test binary, where every sandbox id can run it
	manifest  *buildid.Manifest
	key       grant.Key
	sandboxes map[string]*Sandbox
}

func TestMain(m *testing.M) {
	switch os.Getenv(RoleEnv) {
	case "init":
		RunInit()
		os.Exit(0)
	case "caller":
		RunCaller()
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		env.skip = "needs root: sandboxes map host uids and callers switch to other uids (CI runs as root)"
		os.Exit(m.Run())
	}
	code, err := setup()
	if err == nil {
		code = m.Run()
		if code != 0 {
			for name, s := range env.sandboxes {
				fmt.Fprintf(os.Stderr, "--- sandbox %s log ---\n%s", name, s.Log)
			}
		}
	} else {
		fmt.Fprintln(os.Stderr, "container:", err)
	}
	for name, s := range env.sandboxes {
		if serr := s.Stop(); serr != nil {
			fmt.Fprintf(os.Stderr, "container: stop %s: %v\n%s", name, serr, s.Log)
			code = 1
		}
	}
	if env.base != "" {
		os.RemoveAll(env.base)
	}
	os.Exit(code)
}

func setup() (int, error) {
	base, err := os.MkdirTemp("", "sluice-container")
	if err != nil {
		return 1, err
	}
	env.base = base
	// The sandboxes' inits and the callers run under other uids.
	if err := os.Chmod(base, 0o755); err != nil {
		return 1, err
	}
	bin := filepath.Join(base, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		return 1, err
	}
	var pkgs []string
	for _, h := range helpers {
		pkgs = append(pkgs, "sluice/helpers/"+h+"/cmd/sluice-"+h)
	}
	// Not sandboxed here, built for its build IDs: policy serves "record
	// to policy" too and refuses to start without its peer in the manifest.
	pkgs = append(pkgs, "sluice/helpers/record/cmd/sluice-record")
	build := exec.Command(goTool(), append([]string{"build", "-trimpath", "-o", bin + "/"}, pkgs...)...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build: %v\n%s", err, out)
	}
	// sluice-login links libpam and so libc: the shell sandbox gets those
	// and the PAM stack (see loginParts), the other sandboxes nothing.
	build = exec.Command(goTool(), "build", "-trimpath", "-o", bin+"/", "sluice/helpers/shell/login/cmd/sluice-login")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build sluice-login: %v\n%s", err, out)
	}
	// The probe goes into the sandboxes, which have no C library: static.
	build = exec.Command(goTool(), "build", "-trimpath", "-o", filepath.Join(bin, "probe"), "sluice/tests/container/internal/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build: %v\n%s", err, out)
	}
	env.exe = filepath.Join(bin, "container.test")
	if err := copyFile(os.Args[0], env.exe, 0o755); err != nil {
		return 1, err
	}
	env.key = grant.NewKey()
	run := filepath.Join(base, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		return 1, err
	}

	roots := map[string]*rootfs{}
	specs := map[string]Spec{}
	for _, name := range helpers {
		r, spec, err := layout(base, name)
		if err != nil {
			return 1, fmt.Errorf("%s: %w", name, err)
		}
		roots[name], specs[name] = r, spec
	}
	// The manifest is made once the binaries are linked into the roots:
	// a link changes the inode's ctime, which the manifest records.
	man, err := suite.BuildManifest(bin)
	if err != nil {
		return 1, err
	}
	// This test binary speaks for the frontend and sluicectl, whose own
	// binaries are not built here.
	for _, comp := range []string{msg.Frontend, msg.Admin} {
		for _, p := range msg.Protocols {
			if p.Client != comp {
				continue
			}
			intent := msg.Intent(p, "client")
			ids, err := buildid.OfFile(env.exe, intent)
			if err != nil {
				return 1, err
			}
			man.Entries = append(man.Entries, buildid.Entry{Component: comp, Protocol: p.Name, Role: "client", Intent: intent, BuildID: ids[0]})
		}
	}
	env.manifest = man
	for _, r := range roots {
		if err := man.Write(r.path("etc/sluice/build-ids.json")); err != nil {
			return 1, err
		}
		os.Chmod(r.path("etc/sluice/build-ids.json"), 0o644)
	}

	env.sandboxes = map[string]*Sandbox{}
	for _, name := range helpers {
		s, err := Start(env.exe, specs[name])
		if err != nil {
			return 1, err
		}
		env.sandboxes[name] = s
		if err := waitForSocket(s, socketPath(name)); err != nil {
			return 1, fmt.Errorf("%s: %w\n%s", name, err, s.Log)
		}
	}
	return 0, nil
}

// layout lays out one helper's root, socket directory and sandbox spec.
func layout(base, name string) (*rootfs, Spec, error) {
	r := &rootfs{dir: filepath.Join(base, "root-"+name)}
	b := hostBase[name]
	helperUID := helperHostUID(name)
	exe := "/usr/lib/sluice/" + suite.BinaryName(name)
	spec := Spec{
		Name: name, Root: r.dir, Hostname: "sluice-" + name, Probe: filepath.Join(base, "bin", "probe"),
		UIDs: []IDMap{{inRoot, b}, {inHelper, b + inHelper}},
		GIDs: []IDMap{{inRoot, b}, {inHelper, b + inHelper}},
		UID:  inHelper, GID: inHelper, Groups: []uint32{},
		Env: []string{"PATH=/usr/bin:/bin", "SLUICE_RUNTIME_DIR=/run/sluice",
			"SLUICE_MANIFEST=/etc/sluice/build-ids.json", "CREDENTIALS_DIRECTORY=/run/credentials/" + name},
	}
	passwd := "root:x:0:0:root:/:/nonexistent\nsluice-" + name + ":x:100:100::/:/nonexistent\n"
	group := "root:x:0:\nsluice-" + name + ":x:100:\n"
	sockGroup := uint32(hostClients)
	listen := []string{"--listen", "/run/sluice/" + name + ".sock", "--mode", "0666"}
	switch name {
	case msg.Auth:
		spec.UIDs = append(spec.UIDs, IDMap{inWeb, hostWeb}, IDMap{inAdmin, hostAdmin})
		spec.GIDs = append(spec.GIDs, IDMap{inClients, hostClients}, IDMap{inWeb, hostWeb}, IDMap{inAdmin, hostAdmin})
		spec.Argv = append([]string{exe}, listen...)
		spec.Argv = append(spec.Argv, "--allow", "web to auth=uid:1001", "--allow", "admin to auth=uid:1002",
			"--admins", "uid:1002", "--rp-id", "localhost", "--origin", "http://localhost:8080")
		spec.Env = append(spec.Env, "STATE_DIRECTORY=/var/lib/sluice-auth")
		if err := r.mkdir("var/lib/sluice-auth"); err != nil {
			return nil, spec, err
		}
		// Credentials in memory, as systemd's StateDirectory would be on a
		// disk: the only writable place besides the socket directory.
		spec.Mounts = append(spec.Mounts, Mount{Kind: "tmpfs", Target: "/var/lib/sluice-auth", Options: "size=16m,mode=0700,uid=100,gid=100"})
	case msg.Policy:
		spec.UIDs = append(spec.UIDs, IDMap{inWeb, hostWeb})
		spec.GIDs = append(spec.GIDs, IDMap{inClients, hostClients}, IDMap{inShellCallers, hostShellCallers}, IDMap{inWeb, hostWeb})
		// In sluice-shell-callers, as the unit's SupplementaryGroups=; the
		// init needs it too, to reach the shell socket it binds in.
		// In the clients' group too: policy puts every session into
		// ptystore ("policy to ptystore"), whose socket it binds in.
		spec.Groups = []uint32{inShellCallers, inClients}
		spec.InitGroups = []uint32{inShellCallers, inClients}
		spec.Argv = append([]string{exe}, listen...)
		spec.Argv = append(spec.Argv, "--allow", "web to policy=uid:1001", "--policy", "/etc/sluice/policy")
		if err := r.file("etc/sluice/policy", []byte(policyFile), 0o644); err != nil {
			return nil, spec, err
		}
		group += "shell-callers:x:301:sluice-policy\n"
	case msg.Shell:
		sockGroup = hostShellCallers
		spec.UIDs = append(spec.UIDs, IDMap{inShellUser, b + inShellUser}, IDMap{inPolicy, helperHostUID(msg.Policy)})
		spec.GIDs = append(spec.GIDs, IDMap{inShellCallers, hostShellCallers}, IDMap{inShellUser, b + inShellUser})
		// Root of its sandbox, to start shells as other accounts, with
		// nothing of root's power left but that and what the login
		// (sluice-login) needs to hand the tty to the account: chown, and
		// chmod of a file that then is no longer root's.
		spec.UID, spec.GID = inRoot, inRoot
		spec.Caps = []int{7, 6, 0, 3} // CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_FOWNER
		spec.GIDs = append(spec.GIDs, IDMap{inTTY, b + inTTY})
		spec.Argv = append([]string{exe}, listen...)
		spec.Argv = append(spec.Argv, "--allow", "policy to shell=uid:1003", "--backend", "embedded")
		passwd = "root:x:0:0:root:/:/bin/sh\nsh-user:x:1000:1000::/:/bin/sh\n"
		group = "root:x:0:\ntty:x:5:\nsh-user:x:1000:\n"
		// The login shell: dash, the host's /bin/sh, and the two shared
		// objects it needs. Debian has no static shell unless
		// busybox-static is installed; dash with its libc is smaller than
		// a busybox and already on every machine this runs on.
		if err := r.program("/bin/sh", "/bin/sh"); err != nil {
			return nil, spec, err
		}
		if err := r.mkdir("dev/pts"); err != nil {
			return nil, spec, err
		}
		if err := os.Symlink("pts/ptmx", r.path("dev/ptmx")); err != nil {
			return nil, spec, err
		}
		spec.Mounts = append(spec.Mounts, Mount{Kind: "devpts", Target: "/dev/pts", Options: "newinstance,ptmxmode=0666,mode=0620"})
	case msg.PtyStore:
		spec.UIDs = append(spec.UIDs, IDMap{inWeb, hostWeb}, IDMap{inAdmin, hostAdmin}, IDMap{inPolicy, helperHostUID(msg.Policy)})
		spec.GIDs = append(spec.GIDs, IDMap{inClients, hostClients}, IDMap{inHangupCallers, hostHangupCallers},
			IDMap{inWeb, hostWeb}, IDMap{inAdmin, hostAdmin})
		// In the hangup socket's group, helper and init, as policy is in
		// the shell socket's.
		spec.Groups = []uint32{inHangupCallers}
		spec.InitGroups = []uint32{inHangupCallers}
		spec.Argv = append([]string{exe}, listen...)
		// Sessions are policy's to put ("policy to ptystore"), and the
		// frontend's uid may not.
		spec.Argv = append(spec.Argv, "--allow", "web to ptystore=uid:1001", "--allow", "admin to ptystore=uid:1002",
			"--allow", "policy to ptystore=uid:1003")
		group += "hangup-callers:x:302:sluice-ptystore\n"
	case msg.Hangup:
		// As the runner and systemd run it: root, and of root's power only
		// the right to signal other users' processes. Its pid namespace is
		// its own, like every helper's here; see TestDropAcrossPidNamespaces
		// for what that means for the shells in the shell sandbox.
		sockGroup = hostHangupCallers
		spec.UIDs = append(spec.UIDs, IDMap{inPtyStore, helperHostUID(msg.PtyStore)})
		spec.GIDs = append(spec.GIDs, IDMap{inHangupCallers, hostHangupCallers})
		spec.UID, spec.GID = inRoot, inRoot
		spec.Caps = []int{5} // CAP_KILL
		spec.Argv = append([]string{exe}, listen...)
		spec.Argv = append(spec.Argv, "--allow", "ptystore to hangup=uid:1004", "--session-cgroups", "")
		passwd = "root:x:0:0:root:/:/nonexistent\n"
		group = "root:x:0:\n"
	}
	if err := r.mkdir("proc", "dev", "run/sluice", "usr/lib/sluice", "etc/sluice"); err != nil {
		return nil, spec, err
	}
	if err := os.Link(filepath.Join(base, "bin", suite.BinaryName(name)), r.path(exe)); err != nil {
		return nil, spec, err
	}
	if name == msg.Shell {
		if err := loginParts(r, base, b); err != nil {
			return nil, spec, err
		}
	}
	if err := r.file("etc/passwd", []byte(passwd), 0o644); err != nil {
		return nil, spec, err
	}
	if err := r.file("etc/group", []byte(group), 0o644); err != nil {
		return nil, spec, err
	}
	if name != msg.Shell && name != msg.Hangup {
		// The grant key as a systemd credential: readable by the helper only.
		kp := "run/credentials/" + name + "/grant.key"
		if err := r.file(kp, env.key[:], 0o400); err != nil {
			return nil, spec, err
		}
		if err := os.Chown(r.path(kp), int(helperUID), int(helperUID)); err != nil {
			return nil, spec, err
		}
	}
	if err := r.bind("/dev/null", "/dev/null", true); err != nil {
		return nil, spec, err
	}

	// The socket directory: the helper's, with its callers' group.
	sockDir := filepath.Join(base, "run", name)
	if err := os.Mkdir(sockDir, 0o750); err != nil {
		return nil, spec, err
	}
	if err := os.Chown(sockDir, int(helperUID), int(sockGroup)); err != nil {
		return nil, spec, err
	}
	spec.Mounts = append([]Mount{{Kind: "bind", Source: sockDir, Target: "/run/sluice"}}, spec.Mounts...)
	if name == msg.Policy {
		// The shell's socket at the path suite.SocketPath gives, on a file
		// in policy's own socket directory.
		mp := filepath.Join(sockDir, "shell.sock")
		if err := os.WriteFile(mp, nil, 0o644); err != nil {
			return nil, spec, err
		}
		spec.Mounts = append(spec.Mounts, Mount{Kind: "bind", Source: socketPath(msg.Shell), Target: "/run/sluice/shell.sock"})
		// And ptystore's, where policy puts every session it opens.
		pp := filepath.Join(sockDir, "ptystore.sock")
		if err := os.WriteFile(pp, nil, 0o644); err != nil {
			return nil, spec, err
		}
		spec.Mounts = append(spec.Mounts, Mount{Kind: "bind", Source: socketPath(msg.PtyStore), Target: "/run/sluice/ptystore.sock"})
	}
	if name == msg.PtyStore {
		// Likewise the hangup socket, which a drop calls.
		mp := filepath.Join(sockDir, "hangup.sock")
		if err := os.WriteFile(mp, nil, 0o644); err != nil {
			return nil, spec, err
		}
		spec.Mounts = append(spec.Mounts, Mount{Kind: "bind", Source: socketPath(msg.Hangup), Target: "/run/sluice/hangup.sock"})
	}
	spec.Mounts = append(spec.Mounts, r.mounts...)
	return r, spec, nil
}

func socketPath(name string) string {
	return filepath.Join(env.base, "run", name, name+".sock")
}

// waitForSocket waits until the helper has bound its socket and set its
// mode, or its sandbox has ended.
func waitForSocket(s *Sandbox, path string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeSocket != 0 && st.Mode().Perm() == 0o666 {
			return nil
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", s.Helper)); err != nil {
			return errors.New("helper exited before listening")
		}
		if time.Now().After(deadline) {
			return errors.New("helper did not listen")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func need(t *testing.T) {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
}

// spec returns the call of op on protocol proto, with the hellos of the
// protocol's client component and its server, from the manifest.
func spec(t *testing.T, proto, op string, args any) CallSpec {
	t.Helper()
	p, ok := msg.Lookup(proto)
	if !ok {
		t.Fatalf("no protocol %q", proto)
	}
	mine, err1 := env.manifest.Lookup(p.Client, msg.Intent(p, "client"))
	peer, err2 := env.manifest.Lookup(p.Server, msg.Intent(p, "server"))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	a, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return CallSpec{Path: socketPath(p.Server), Op: op, Args: a,
		Hello:  rpc.Hello{Intent: mine.Intent, BuildID: mine.BuildID},
		Expect: rpc.Hello{Intent: peer.Intent, BuildID: peer.BuildID}}
}

func signIn(t *testing.T, user string) msg.Grant {
	t.Helper()
	g, err := grant.Sign(env.key, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// outcome is what a call must come to.
type outcome struct {
	ok       bool
	eacces   bool   // refused by the socket's file permissions
	seenUID  uint32 // forbidden: the caller's uid as the helper saw it
	checkRep func(t *testing.T, reply []byte, fds []*os.File)
}

func allowed(check func(t *testing.T, reply []byte, fds []*os.File)) outcome {
	return outcome{ok: true, checkRep: check}
}

// forbiddenAs: the rpc layer refused the caller, whom the helper saw as
// uid (and the same gid: every caller here has gid == uid).
func forbiddenAs(uid uint32) outcome { return outcome{seenUID: uid} }

var atSocket = outcome{eacces: true}

func check(t *testing.T, c Caller, cs CallSpec, send *os.File, want outcome) []*os.File {
	t.Helper()
	res, fds, err := c.Call(env.exe, cs, send)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case want.ok:
		if res.Err != "" {
			closeAll(fds)
			t.Fatalf("%s: %s", c.Name, res.Err)
		}
		if want.checkRep != nil {
			want.checkRep(t, res.Reply, fds)
		}
		return fds
	case want.eacces:
		if res.Errno != int(syscall.EACCES) || !strings.Contains(res.Err, "dial") {
			t.Fatalf("%s: %+v, want EACCES from connect", c.Name, res)
		}
	default:
		// The rpc layer's message names the peer as the kernel gave it to
		// the helper, so it shows the translation.
		p, _ := msg.Lookup(protoOf(cs))
		text := fmt.Sprintf("uid %d gid %d may not call %q", want.seenUID, want.seenUID, msg.Intent(p, "client"))
		if res.Code != rpc.CodeForbidden || res.Msg != text {
			t.Fatalf("%s: %+v, want forbidden: %s", c.Name, res, text)
		}
	}
	if res.NFDs != 0 || len(fds) != 0 || len(res.Reply) != 0 {
		t.Errorf("%s: refused, but got %d fds and %d reply bytes", c.Name, res.NFDs, len(res.Reply))
	}
	closeAll(fds)
	return nil
}

func protoOf(cs CallSpec) string {
	for _, p := range msg.Protocols {
		if msg.Intent(p, "client") == cs.Hello.Intent {
			return p.Name
		}
	}
	return ""
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := msgpack.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// shellSays types a line into a shell and waits for what it must print.
func shellSays(t *testing.T, term *ptytest.Term, line, want string) {
	t.Helper()
	if err := term.Type(line + "\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := term.Expect(want); err != nil {
		t.Fatal(err)
	}
}

// checkShell checks a pty master from the shell sandbox: a login shell
// runs behind it as sh-user, in the shell sandbox's pid and uts namespaces.
func checkShell(t *testing.T, fds []*os.File, pid int32) {
	t.Helper()
	if len(fds) != 1 {
		closeAll(fds)
		t.Fatalf("%d fds, want the pty master", len(fds))
	}
	term, err := ptytest.New(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	// Builtins only: the sandbox has dash and nothing else. The quotes
	// keep the echoed command line from matching.
	shellSays(t, term, `while read k v; do case $k in Uid:) set -- $v; echo "<u""id $1>";; esac; done </proc/self/status`,
		fmt.Sprintf("<uid %d>", inShellUser))
	shellSays(t, term, `read h </proc/sys/kernel/hostname; echo "<h""ost $h pid $$>"`,
		fmt.Sprintf("<host sluice-shell pid %d>", pid))
	// A login made it (sluice-login, PAM): the tty is the account's, group
	// tty, 0620, and utmp names the session.
	sb := env.sandboxes[msg.Shell]
	host := hostPID(t, sb.Helper, int(pid))
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/0", host), &st); err != nil {
		t.Fatal(err)
	}
	b := hostBase[msg.Shell]
	if st.Uid != b+inShellUser || st.Gid != b+inTTY || st.Mode&0o7777 != 0o620 {
		t.Errorf("the shell's tty is uid %d gid %d mode %#o, want %d %d 0620", st.Uid, st.Gid, st.Mode&0o7777, b+inShellUser, b+inTTY)
	}
	utmp, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/var/run/utmp", sb.Helper))
	if err != nil || !strings.Contains(string(utmp), "sh-user") {
		t.Errorf("no utmp entry for sh-user in the shell sandbox: %v", err)
	}
}

// hostPID is the host pid of the process that is nsPID in the pid
// namespace of host process inNS.
func hostPID(t *testing.T, inNS, nsPID int) int {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", inNS))
	if err != nil {
		t.Fatal(err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "NSpid:" || f[len(f)-1] != strconv.Itoa(nsPID) {
				continue
			}
			host, _ := strconv.Atoi(f[1])
			if other, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", host)); other == ns {
				return host
			}
		}
	}
	t.Fatalf("no process is pid %d in the pid namespace of %d", nsPID, inNS)
	return 0
}

// TestCalls calls every helper from outside its sandbox, as allowed and
// as forbidden callers, and checks which way each call went.
func TestCalls(t *testing.T) {
	need(t)
	loginBegin := spec(t, msg.ProtoWebToAuth, msg.OpLoginBegin, msg.LoginBegin{})
	enroll := spec(t, msg.ProtoAdminToAuth, msg.OpEnroll, msg.Enroll{User: "alice"})
	create := spec(t, msg.ProtoWebToPolicy, msg.OpCreateShellSession,
		msg.CreateShellSession{Machine: msg.HostMachine, User: "sh-user", Grant: signIn(t, "alice")})
	openShell := spec(t, msg.ProtoPolicyToShell, msg.OpOpenShell,
		msg.OpenShell{Machine: msg.HostMachine, User: "sh-user", Requester: "alice"})
	webList := spec(t, msg.ProtoWebToPtyStore, msg.OpPtyList, msg.PtyList{Grant: signIn(t, "alice")})
	adminList := spec(t, msg.ProtoAdminToPtyStore, msg.OpPtyList, msg.PtyList{})

	for _, tc := range []struct {
		name   string
		caller Caller
		call   CallSpec
		want   outcome
	}{
		{"auth/web login-begin", web, loginBegin, allowed(func(t *testing.T, b []byte, _ []*os.File) {
			r := decode[msg.LoginBeginReply](t, b)
			if !strings.Contains(string(r.Options), `"challenge"`) || len(r.State) == 0 {
				t.Errorf("login-begin reply %+v", r)
			}
		})},
		{"auth/admin enroll", admin, enroll, allowed(func(t *testing.T, b []byte, _ []*os.File) {
			r := decode[msg.EnrollReply](t, b)
			if r.User != "alice" || r.Token == "" || r.Expires <= time.Now().UnixMilli() {
				t.Errorf("enroll reply %+v", r)
			}
		})},
		// Mapped, but not on this protocol's list.
		{"auth/admin login-begin", admin, loginBegin, forbiddenAs(inAdmin)},
		{"auth/web enroll", web, enroll, forbiddenAs(inWeb)},
		// Unmapped: 65534 to the helper, whatever the number outside.
		{"auth/impostor login-begin", impostor, loginBegin, forbiddenAs(65534)},
		{"auth/stranger enroll", stranger, enroll, forbiddenAs(65534)},
		// Host root passes the file permissions (CAP_DAC_OVERRIDE) and
		// is still nobody to the helper; its "uid 0 is an admin" rule
		// only ever meets the sandbox's own root.
		{"auth/host root enroll", hostRoot, enroll, forbiddenAs(65534)},
		{"auth/outsider login-begin", outsider, loginBegin, atSocket},

		{"policy/web create-shell-session", web, create, allowed(func(t *testing.T, b []byte, fds []*os.File) {
			r := decode[msg.CreateShellSessionReply](t, b)
			if r.Session.Owner != "alice" || r.Session.UnixUser != "sh-user" || !strings.HasPrefix(r.Rule, "allow alice as sh-user on .host") {
				t.Errorf("create-shell-session reply %+v", r)
			}
			checkShell(t, fds, r.Session.PID)
		})},
		{"policy/admin", admin, create, forbiddenAs(65534)},
		{"policy/impostor", impostor, create, forbiddenAs(65534)},
		{"policy/host root", hostRoot, create, forbiddenAs(65534)},
		{"policy/outsider", outsider, create, atSocket},

		// The policy helper's host account, calling from outside: mapped
		// to 1003 in the shell sandbox, the one uid allowed.
		{"shell/policy account open-shell", policyAccount, openShell, allowed(func(t *testing.T, b []byte, fds []*os.File) {
			r := decode[msg.OpenShellReply](t, b)
			checkShell(t, fds, r.PID)
		})},
		{"shell/stranger", stranger, openShell, forbiddenAs(65534)},
		{"shell/impostor", impostor, openShell, forbiddenAs(65534)},
		{"shell/host root", hostRoot, openShell, forbiddenAs(65534)},
		// Web may reach auth, policy and ptystore, not the shell.
		{"shell/web", web, openShell, atSocket},
		{"shell/outsider", outsider, openShell, atSocket},

		{"ptystore/web pty-list", web, webList, allowed(nil)},
		{"ptystore/admin pty-list", admin, adminList, allowed(nil)},
		{"ptystore/admin on web", admin, webList, forbiddenAs(inAdmin)},
		{"ptystore/web on admin", web, adminList, forbiddenAs(inWeb)},
		{"ptystore/impostor", impostor, adminList, forbiddenAs(65534)},
		{"ptystore/host root", hostRoot, adminList, forbiddenAs(65534)},
		{"ptystore/outsider", outsider, webList, atSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closeAll(check(t, tc.caller, tc.call, nil, tc.want))
		})
	}
}

// TestPtyStoreHoldsAPty hands the sandboxed ptystore a pty master from the
// host over SCM_RIGHTS, as policy does, and finds it listed, for its owner
// and for admins; the frontend's uid may not put one.
func TestPtyStoreHoldsAPty(t *testing.T) {
	need(t)
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	defer master.Close()
	info := msg.SessionInfo{ID: "c0ffee00c0ffee00c0ffee00c0ffee00", Owner: "bob", UnixUser: "sh-user",
		Machine: msg.HostMachine, Created: time.Now().UnixMilli(), Sharing: msg.SharePrivate}
	put := spec(t, msg.ProtoPolicyToPtyStore, msg.OpPtyPut, msg.PtyPut{Grant: signIn(t, "bob"), Session: info, Ticket: tickettest.For(t, env.key, info, master)})
	put.SendFD = true
	check(t, impostor, put, master, forbiddenAs(65534))
	check(t, web, put, master, forbiddenAs(inWeb))
	check(t, policyAccount, put, master, allowed(nil))

	has := func(t *testing.T, b []byte, _ []*os.File) {
		r := decode[msg.PtyListReply](t, b)
		for _, s := range r.Sessions {
			if s.ID == info.ID && s.Owner == "bob" {
				return
			}
		}
		t.Errorf("session %s not listed: %+v", info.ID, r.Sessions)
	}
	check(t, web, spec(t, msg.ProtoWebToPtyStore, msg.OpPtyList, msg.PtyList{Grant: signIn(t, "bob")}), nil, allowed(has))
	check(t, admin, spec(t, msg.ProtoAdminToPtyStore, msg.OpPtyList, msg.PtyList{}), nil, allowed(has))
	check(t, admin, spec(t, msg.ProtoAdminToPtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: info.ID}), nil, allowed(nil))
}

// TestInside looks around from inside each sandbox, with a probe that
// stands where the helper stands: its namespaces, root, ids and
// capabilities (which the test checks against the helper's own).
func TestInside(t *testing.T) {
	need(t)
	hostNS := map[string]string{}
	for _, ns := range []string{"user", "mnt", "pid", "net", "ipc", "uts"} {
		hostNS[ns], _ = os.Readlink("/proc/self/ns/" + ns)
	}
	for _, name := range helpers {
		t.Run(name, func(t *testing.T) {
			s := env.sandboxes[name]
			r, err := s.Probe()
			if err != nil {
				t.Fatal(err)
			}
			// The probe is where the helper is.
			for ns, v := range r.NS {
				hv, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", s.Helper, ns))
				if err != nil {
					t.Fatal(err)
				}
				if v != hv {
					t.Errorf("probe's %s namespace %s, helper's %s", ns, v, hv)
				}
				if v == hostNS[ns] {
					t.Errorf("%s namespace is the host's: %s", ns, v)
				}
			}
			var root syscall.Stat_t
			if err := syscall.Stat(fmt.Sprintf("/proc/%d/root", s.Helper), &root); err != nil {
				t.Fatal(err)
			}
			if r.Root != [2]uint64{root.Dev, root.Ino} {
				t.Errorf("probe's root %v, helper's %v", r.Root, [2]uint64{root.Dev, root.Ino})
			}
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Helper))
			if err != nil {
				t.Fatal(err)
			}
			for _, field := range []string{"CapEff", "CapBnd"} {
				want := map[string]string{"CapEff": r.CapEff, "CapBnd": r.CapBnd}[field]
				if !strings.Contains(string(status), field+":\t"+want+"\n") {
					t.Errorf("probe's %s %s differs from the helper's", field, want)
				}
			}
			wantCaps := "0000000000000000"
			uid := inHelper
			switch name {
			case msg.Shell:
				wantCaps, uid = "00000000000000c9", inRoot // CAP_SETUID|CAP_SETGID|CAP_FOWNER|CAP_CHOWN
			case msg.Hangup:
				wantCaps, uid = "0000000000000020", inRoot // CAP_KILL
			}
			if r.CapEff != wantCaps || r.CapBnd != wantCaps {
				t.Errorf("capabilities eff %s bounding %s, want %s", r.CapEff, r.CapBnd, wantCaps)
			}
			if !strings.HasPrefix(r.IDs, fmt.Sprintf("Uid: %d %d %d %d\n", uid, uid, uid, uid)) {
				t.Errorf("ids %q", r.IDs)
			}

			// pid namespace: the init, the helper and the probe, nothing of
			// the host's.
			// (Shells the tests opened, and their sluice-login, may still
			// be there: policy puts every session into ptystore, which
			// holds it, and TestDropAcrossPidNamespaces's cannot be ended.)
			want := map[int]string{1: "container.test", s.HelperNS: suite.BinaryName(name), r.PID: ""}
			for _, p := range r.Processes {
				pidText, comm, _ := strings.Cut(p, " ")
				pid, _ := strconv.Atoi(pidText)
				w, ok := want[pid]
				switch {
				case ok && (w == "" || w == comm):
					delete(want, pid)
				case name == msg.Shell && (comm == "sh" || comm == "sluice-login"):
				default:
					t.Errorf("process %q visible", p)
				}
			}
			if len(want) != 0 {
				t.Errorf("processes %q; not seen: %v", r.Processes, want)
			}
			// net namespace: lo, down, and nowhere to go.
			if len(r.Interfaces) != 1 || r.Interfaces[0] != "lo loopback" {
				t.Errorf("interfaces %q, want lo down", r.Interfaces)
			}
			if r.DialErrno != int(syscall.ENETUNREACH) {
				t.Errorf("dial: %s (errno %d), want ENETUNREACH", r.DialErr, r.DialErrno)
			}
			// uts namespace.
			if host, _ := os.Hostname(); r.Hostname != "sluice-"+name || host == r.Hostname {
				t.Errorf("hostname %q", r.Hostname)
			}
			// Read-only root; the socket directory writable.
			if !r.RootRO || r.MkdirErrno != int(syscall.EROFS) || r.CreateErrno != int(syscall.EROFS) || r.WriteSelfErrno == 0 {
				t.Errorf("root: read-only %v, mkdir errno %d, create errno %d, write own binary errno %d; want true, EROFS, EROFS, an error",
					r.RootRO, r.MkdirErrno, r.CreateErrno, r.WriteSelfErrno)
			}
			if r.SockDirErrno != 0 {
				t.Errorf("socket directory not writable: %s", r.SockDirErr)
			}
			t.Logf("%s: uid_map %q, processes %q, %s", name, r.UIDMap, r.Processes, r.IDs)
		})
	}
}

// TestHangupCallers calls the sandboxed hangup helper from outside: only
// ptystore's host account (1004 inside) gets past the handshake, and a pty
// no session controls is ended at once (nothing to signal).
func TestHangupCallers(t *testing.T) {
	need(t)
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	defer master.Close()
	hang := spec(t, msg.ProtoPtyStoreToHangup, msg.OpHangup, msg.HangupSession{})
	hang.SendFD = true
	for _, tc := range []struct {
		name   string
		caller Caller
		want   outcome
	}{
		{"ptystore account", ptystoreAccount, allowed(func(t *testing.T, b []byte, _ []*os.File) {
			if r := decode[msg.HangupSessionReply](t, b); r.SID != 0 || r.Hungup != 0 || r.Killed != 0 {
				t.Errorf("hangup of a pty no session controls: %+v, want nothing done", r)
			}
		})},
		{"stranger", stranger, forbiddenAs(65534)},
		{"impostor", impostor, forbiddenAs(65534)},
		{"host root", hostRoot, forbiddenAs(65534)},
		// Not in the hangup socket's group.
		{"web", web, atSocket},
		{"policy account", policyAccount, atSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closeAll(check(t, tc.caller, hang, master, tc.want))
		})
	}
}

// TestDropAcrossPidNamespaces: the hangup helper sees no process of the
// shell sandbox (its pid namespace is its own; the kernel answers
// TIOCGSID with 0 for a session it cannot see), so it cannot end a shell
// started there. It must say so rather than report the session ended:
// ptystore's drop fails and the session stays listed. Where shells run in
// a pid namespace of their own, hangup has to run in it.
func TestDropAcrossPidNamespaces(t *testing.T) {
	need(t)
	fds := check(t, web, spec(t, msg.ProtoWebToPolicy, msg.OpCreateShellSession,
		msg.CreateShellSession{Machine: msg.HostMachine, User: "sh-user", Grant: signIn(t, "alice")}), nil, allowed(nil))
	defer closeAll(fds)
	if len(fds) != 1 {
		t.Fatalf("%d fds, want the pty master", len(fds))
	}
	info := msg.SessionInfo{ID: "d00dd00dd00dd00dd00dd00dd00dd00d", Owner: "alice", UnixUser: "sh-user",
		Machine: msg.HostMachine, Created: time.Now().UnixMilli(), Sharing: msg.SharePrivate}
	put := spec(t, msg.ProtoPolicyToPtyStore, msg.OpPtyPut, msg.PtyPut{Grant: signIn(t, "alice"), Session: info, Ticket: tickettest.For(t, env.key, info, fds[0])})
	put.SendFD = true
	check(t, policyAccount, put, fds[0], allowed(nil))

	res, got, err := admin.Call(env.exe, spec(t, msg.ProtoAdminToPtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: info.ID}), nil)
	closeAll(got)
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != msg.CodeFailed || !strings.Contains(res.Msg, "the session is kept") || !strings.Contains(res.Msg, "the pty's session is 0") {
		t.Fatalf("drop: %+v, want failed: the session is kept, hangup refused session 0", res)
	}
	check(t, admin, spec(t, msg.ProtoAdminToPtyStore, msg.OpPtyList, msg.PtyList{}), nil, allowed(func(t *testing.T, b []byte, _ []*os.File) {
		for _, s := range decode[msg.PtyListReply](t, b).Sessions {
			if s.ID == info.ID {
				return
			}
		}
		t.Errorf("session %s no longer listed after a failed drop", info.ID)
	}))
}
