package systemd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/installtest"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
)

// The integration test boots the host's own systemd in a container
// (systemd-nspawn --directory=/ --volatile=yes: a tmpfs root with the
// host's /usr read-only) with an installed tree bound at /opt/sluice and
// the units copied into /etc/systemd/system, starts the sockets, and runs
// web -> policy -> shell -> ptystore through the real Accept=yes
// instances, DynamicUser accounts, machined, polkit and the fd store,
// including a restart of the pty store that keeps the session.
//
// The "web" side is this test binary run inside the container with the
// frontend's group (clientRole): it signs a grant with the installed
// grant key, as auth would after a passkey login, and speaks as the
// frontend with the frontend's build ID from the manifest.

const (
	clientEnv = "SLUICE_NSPAWN_CLIENT" // set: this process is the in-container client
	prefix    = "/opt/sluice"
	testDir   = "/opt/sluice-test"
)

// nspawnUnavailable skips, or fails when CI said this test must run.
func nspawnUnavailable(t *testing.T, format string, a ...any) {
	t.Helper()
	if os.Getenv("SLUICE_REQUIRE_NSPAWN") == "1" {
		t.Fatalf("SLUICE_REQUIRE_NSPAWN=1 but: "+format, a...)
	}
	t.Skipf(format+" (set SLUICE_REQUIRE_NSPAWN=1 to make this a failure)", a...)
}

type container struct {
	t    *testing.T
	init int
}

// run runs a command inside the container (all its namespaces), bounded
// so a wedged container ends the test instead of hanging it.
func (c *container) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.init), "-a", "--"}, args...)...)
	// A process left inside may hold the output pipe after nsenter is
	// killed: do not wait on it for ever.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		journal, _ := c.run("journalctl", "--no-pager", "-o", "short-monotonic", "-n", "40", "-u", "sluice-*")
		c.t.Fatalf("in the container: %s: %v\n%s\nsluice's journal:\n%s", strings.Join(args, " "), err, out, journal)
	}
	return out
}

func boot(t *testing.T) *container {
	t.Helper()
	if os.Getuid() != 0 {
		nspawnUnavailable(t, "not root")
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			nspawnUnavailable(t, "%s not installed (Debian: systemd-container, util-linux)", tool)
		}
	}
	if fi, err := os.Lstat("/bin"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		nspawnUnavailable(t, "--volatile=yes needs a merged /usr")
	}

	dest := installtest.Install(t, prefix)
	stage := t.TempDir()
	units := filepath.Join(stage, "system")
	if err := os.Mkdir(units, 0o755); err != nil {
		t.Fatal(err)
	}
	// Copied, not linked: systemd treats a symlinked unit file as an alias.
	src, _ := filepath.Glob(filepath.Join(dest, prefix, "lib/systemd/system/*"))
	for _, f := range src {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(units, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	policy := filepath.Join(stage, "policy")
	if err := os.WriteFile(policy, []byte(nspawnPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dest, prefix)
	args := []string{
		"--directory=/", "--volatile=yes", "--register=no", "--keep-unit", "-b",
		"--console=passive", "--machine=sluicetest",
		// nspawn's own filter predates Landlock; the helpers use it.
		"--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self",
		"--bind-ro=" + tree + ":" + prefix,
		"--bind-ro=" + units + ":/etc/systemd/system",
		"--bind-ro=" + tree + "/lib/sysusers.d/sluice.conf:/etc/sysusers.d/sluice.conf",
		"--bind-ro=" + tree + "/lib/tmpfiles.d/sluice.conf:/etc/tmpfiles.d/sluice.conf",
		"--bind-ro=" + tree + "/share/polkit-1/rules.d/50-sluice.rules:/etc/polkit-1/rules.d/50-sluice.rules",
		"--bind-ro=" + policy + ":/etc/sluice/policy",
		"--bind-ro=" + filepath.Dir(self) + ":" + testDir,
		// The shell machined starts goes through PAM ("login"), whose
		// configuration an empty volatile /etc lacks.
		"--bind-ro=/etc/pam.d", "--bind-ro=/etc/security",
		"--", "systemd.firstboot=off",
	}
	cmd := exec.Command("systemd-nspawn", args...)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		nspawnUnavailable(t, "systemd-nspawn: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	c := &container{t: t}
	t.Cleanup(func() {
		// The container's init first: nspawn then has nothing to wait for.
		if c.init > 0 {
			syscall.Kill(c.init, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		<-exited
	})
	// Its init is the child of nspawn that runs systemd (an intermediate
	// child that sets up the namespaces comes and goes first).
	for c.init == 0 {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", cmd.Process.Pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			for _, pid := range strings.Fields(string(b)) {
				if comm, _ := os.ReadFile("/proc/" + pid + "/comm"); strings.TrimSpace(string(comm)) == "systemd" {
					c.init, _ = strconv.Atoi(pid)
				}
			}
		}
		if c.init != 0 {
			break
		}
		select {
		case <-exited:
			nspawnUnavailable(t, "systemd-nspawn exited: %s", log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// systemctl needs PID 1's private socket, which comes a moment
	// after PID 1 itself.
	// ("offline" is what systemctl says until it can reach it.)
	var out string
	giveUp := time.After(3 * time.Minute) // a bound on a hung boot, not a timing assertion
	for {
		out, err = c.run("systemctl", "is-system-running", "--wait")
		if !strings.Contains(out, "Failed to connect to bus") && strings.TrimSpace(out) != "offline" {
			break
		}
		select {
		case <-exited:
			nspawnUnavailable(t, "systemd-nspawn exited: %s", log.String())
		case <-giveUp:
			nspawnUnavailable(t, "systemctl never reached the container's systemd: %s", out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	state := strings.TrimSpace(out)
	if state != "running" && state != "degraded" {
		failed, _ := c.run("systemctl", "--failed", "--no-pager")
		nspawnUnavailable(t, "the container's systemd did not boot: %q %v\n%s\nnspawn: %s", state, err, failed, log.String())
	}
	if state == "degraded" {
		failed, _ := c.run("systemctl", "--failed", "--no-pager")
		t.Logf("container booted degraded (not sluice's units):\n%s", failed)
	}
	return c
}

func TestNspawn(t *testing.T) {
	c := boot(t)
	// Not sluice.target: the container shares the host's network, and its
	// frontend socket would take the host's port 8080.
	c.must("systemctl", "start", "sluice-auth.socket", "sluice-policy.socket", "sluice-shell.socket", "sluice-ptystore.socket",
		"sluice-hangup.socket")
	socks := c.must("stat", "-c", "%n %a %U:%G", "/run/sluice/auth.sock", "/run/sluice/policy.sock", "/run/sluice/shell.sock",
		"/run/sluice/ptystore.sock", "/run/sluice/hangup.sock")
	for _, want := range []string{"auth.sock 660 root:sluice-web", "policy.sock 660 root:sluice-policy-callers",
		"shell.sock 660 root:sluice-shell-callers", "ptystore.sock 660 root:sluice-ptystore-callers", "hangup.sock 660 root:sluice-hangup-callers"} {
		if !strings.Contains(socks, want) {
			t.Errorf("sockets:\n%s\nlack %q", socks, want)
		}
	}

	// The admin side: root, over the admin protocols.
	out := c.must(prefix+"/bin/sluicectl", "enroll", "alice")
	_, link, _ := strings.Cut(out, "/enroll#")
	token := strings.Join(strings.Fields(link)[:min(1, len(strings.Fields(link)))], "")
	if token == "" {
		t.Fatalf("enroll: %s", out)
	}

	client := func(args ...string) string {
		t.Helper()
		cmd := append([]string{"env", clientEnv + "=1", "setpriv", "--groups=sluice-web,sluice-ptystore-callers", testDir + "/" + filepath.Base(os.Args[0])}, args...)
		out, err := c.run(cmd...)
		if err != nil {
			journal, _ := c.run("journalctl", "--no-pager", "-n", "60")
			t.Fatalf("client %v: %v\n%s\njournal:\n%s", args, err, out, journal)
		}
		return out
	}
	out = client("open")
	id, ok := strings.CutPrefix(strings.TrimSpace(lastLine(out)), "SESSION ")
	if !ok || !strings.Contains(out, "SHELL OK") {
		t.Fatalf("client open: %s", out)
	}
	t.Logf("session %s through policy, shell (machined, polkit) and ptystore", id)

	sessions := c.must(prefix+"/bin/sluicectl", "sessions", "--json")
	if !strings.Contains(sessions, id) {
		t.Errorf("sluicectl sessions lacks %s:\n%s", id, sessions)
	}
	if n := c.must("systemctl", "show", "-P", "NFileDescriptorStore", "sluice-ptystore.service"); strings.TrimSpace(n) != "1" {
		t.Errorf("fd store holds %q fds, want 1", strings.TrimSpace(n))
	}
	pid1 := strings.TrimSpace(c.must("systemctl", "show", "-P", "MainPID", "sluice-ptystore.service"))
	uid := strings.Fields(strings.TrimPrefix(c.must("grep", "^Uid:", "/proc/"+pid1+"/status"), "Uid:"))
	if len(uid) == 0 {
		t.Fatal("no Uid: line for the pty store")
	}
	if n, _ := strconv.Atoi(uid[0]); n < 61184 || n > 65519 {
		t.Errorf("ptystore runs as uid %v, not a DynamicUser uid", uid)
	}
	// Room for --max-conns 1024 calls beside the sessions: the unit's
	// LimitNOFILE= (a lower soft limit Go would raise at start).
	lim := strings.Fields(strings.TrimPrefix(c.must("grep", "^Max open files", "/proc/"+pid1+"/limits"), "Max open files"))
	if len(lim) < 2 || lim[1] != "16384" || atoi(lim[0]) < 16383 {
		t.Errorf("ptystore's open files limit (soft, hard): %v, want 16384 16384", lim)
	}

	c.must("systemctl", "restart", "sluice-ptystore.service")
	pid2 := strings.TrimSpace(c.must("systemctl", "show", "-P", "MainPID", "sluice-ptystore.service"))
	if pid2 == pid1 || pid2 == "0" {
		t.Fatalf("ptystore main pid %s -> %s: not restarted", pid1, pid2)
	}
	if out := client("get", id); !strings.Contains(out, "SHELL OK") {
		t.Errorf("after the restart: %s", out)
	}
	endWhileHeld(t, c, id, "", "sessions", "end", id)
	disableWhileHeld(t, c, token)
	recordUnderSystemd(t, c)

	journal := c.must("journalctl", "--no-pager", "-o", "cat", "-u", "sluice-*")
	for _, want := range []string{
		"call=create-shell-session", "call=open-shell", "call=pty-put", "call=pty-get", "call=enroll",
	} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal lacks %q", want)
		}
	}
	// Each call is a native journal entry with its own fields.
	for _, call := range []string{"create-shell-session", "open-shell", "pty-put", "pty-get", "enroll"} {
		// Refusals come too (the revocation checks): one that went well.
		entries := c.must("journalctl", "--no-pager", "-o", "json", "SLUICE_CALL="+call, "SLUICE_RESULT=ok")
		var e map[string]any
		if err := json.Unmarshal([]byte(lastLine(entries)), &e); err != nil {
			t.Errorf("no journal entry with SLUICE_CALL=%s: %v\n%s", call, err, entries)
			continue
		}
		for _, f := range []string{"SLUICE_HELPER", "SLUICE_PID", "SLUICE_UID", "SLUICE_RESULT", "SLUICE_DURATION"} {
			if e[f] == nil || e[f] == "" {
				t.Errorf("%s entry lacks %s: %v", call, f, e)
			}
		}
		if e["SLUICE_RESULT"] != "ok" {
			t.Errorf("%s: SLUICE_RESULT=%v", call, e["SLUICE_RESULT"])
		}
	}
	instances := c.must("journalctl", "--no-pager", "-o", "short", "-u", "sluice-policy@*", "-u", "sluice-shell@*")
	if !strings.Contains(instances, "sluice-policy@") || !strings.Contains(instances, "sluice-shell@") {
		t.Errorf("no Accept=yes instances in the journal:\n%s", instances)
	}
	for _, bad := range []string{"confine: failed", "without Landlock", "SIGSYS", "Bad system call"} {
		if strings.Contains(journal, bad) {
			t.Errorf("journal says %q:\n%s", bad, journal)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// --- inside the container -------------------------------------------------

// clientRole runs when the test binary is started inside the container
// with clientEnv set: "open" makes a session through policy and hands it
// to ptystore, "get ID" takes it back from ptystore; both type into the
// shell and wait for its answer.
func clientRole(args []string) error {
	man, err := buildid.Load(prefix + "/libexec/sluice/build-ids.json")
	if err != nil {
		return err
	}
	if len(args) == 1 && args[0] == "driver" {
		return driver(man)
	}
	g, err := clientGrant()
	if err != nil {
		return err
	}
	call := func(proto, op string, a any, fds []*os.File, reply any) ([]*os.File, error) {
		return frontendCall(man, proto, op, a, fds, reply)
	}
	var master *os.File
	switch {
	case len(args) == 1 && args[0] == "open":
		var rep msg.CreateShellSessionReply
		fds, err := call(msg.ProtoWebToPolicy, msg.OpCreateShellSession,
			msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, nil, &rep)
		if err != nil {
			return fmt.Errorf("create-shell-session: %w", err)
		}
		if len(fds) != 1 {
			return fmt.Errorf("%d fds from policy", len(fds))
		}
		master = fds[0]
		put := msg.PtyPutReply{Session: rep.Session} // policy put it
		defer fmt.Printf("SESSION %s\n", put.Session.ID)
	case len(args) == 2 && (args[0] == "get" || args[0] == "hold"):
		var rep msg.PtyGetReply
		fds, err := call(msg.ProtoWebToPtyStore, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: args[1]}, nil, &rep)
		if err != nil {
			return fmt.Errorf("pty-get: %w", err)
		}
		if len(fds) != 1 || rep.Mode != msg.ModeOwner {
			return fmt.Errorf("pty-get: %d fds, mode %q", len(fds), rep.Mode)
		}
		master = fds[0]
	default:
		return errors.New("want: open | get ID | hold ID")
	}
	defer master.Close()
	if args[0] == "hold" {
		return hold(master)
	}
	if err := answers(master, args[0] == "open"); err != nil {
		return err
	}
	fmt.Println("SHELL OK")
	return nil
}

// answers types into the shell and waits for the answer it computes (so
// the echoed line cannot match). A fresh shell is typed to only once it
// has printed something: machined's unit resets the terminal when it
// starts the shell, after the call that made the session has returned,
// and what was typed before is flushed with it.
func answers(master *os.File, fresh bool) error {
	if fresh {
		buf := make([]byte, 4096)
		n, err := master.Read(buf)
		fmt.Fprintf(os.Stderr, "pty: %q\n", buf[:n])
		if err != nil {
			return fmt.Errorf("reading the new shell: %w", err)
		}
	}
	if _, err := master.WriteString("echo $((6*7))-sluice\n"); err != nil {
		return err
	}
	r := bufio.NewReader(master)
	for {
		line, err := r.ReadString('\n')
		// The terminal's output, for the test's failure message.
		fmt.Fprintf(os.Stderr, "pty: %q\n", line)
		if strings.Contains(line, "42-sluice") {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the shell: %w", err)
		}
	}
}

// grantFileEnv names a file holding the grant (msgpack) the one-shot
// client modes use, one auth issued after a passkey sign-in (the driver
// writes it); without it they sign a grant for alice with the grant key.
const grantFileEnv = "SLUICE_NSPAWN_GRANT"

func clientGrant() (msg.Grant, error) {
	var g msg.Grant
	if path := os.Getenv(grantFileEnv); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return g, err
		}
		return g, msgpack.Unmarshal(b, &g)
	}
	key, err := grant.LoadKey("/etc/sluice/grant.key")
	if err != nil {
		return g, err
	}
	return grant.Sign(key, "alice", time.Now(), time.Hour)
}

// frontendCall makes one call as the frontend would, with the build IDs
// from the installed manifest.
func frontendCall(man *buildid.Manifest, proto, op string, a any, fds []*os.File, reply any) ([]*os.File, error) {
	p, ok := msg.Lookup(proto)
	if !ok {
		return nil, fmt.Errorf("no protocol %q", proto)
	}
	mine, peer := rpc.Hello{Intent: msg.Intent(p, "client")}, rpc.Hello{Intent: msg.Intent(p, "server")}
	e, err := man.Lookup(p.Client, mine.Intent)
	if err != nil {
		return nil, err
	}
	mine.BuildID = e.BuildID
	if e, err = man.Lookup(p.Server, peer.Intent); err != nil {
		return nil, err
	}
	peer.BuildID = e.BuildID
	c := &rpc.Client{Path: "/run/sluice/" + p.Server + ".sock", Hello: mine, Expect: peer, Timeout: 30 * time.Second}
	raw, err := msgpack.Marshal(a)
	if err != nil {
		return nil, err
	}
	return c.Call(context.Background(), msg.Request{Op: op, Args: raw}, fds, reply)
}

// Markers of the two children hold starts, found again with pgrep -f.
const (
	childMark  = "sleep 987001"
	setsidMark = "sleep 987002"
)

// hold stays attached to the session as its owner: it starts a child and
// a child that leaves the session (setsid -f), says "SHELL <pid>" once
// both run, and reads until the pty is hung up, then says "HUNG UP".
func hold(master *os.File) error {
	// The shell computes the pid line, so the echoed input cannot match.
	line := childMark + " & setsid -f " + setsidMark + "; sleep 0.2; echo SHELL-$(($$+0))-$((6*7))\n"
	if _, err := master.WriteString(line); err != nil {
		return err
	}
	r := bufio.NewReader(master)
	said := false
	for {
		l, err := r.ReadString('\n')
		// The terminal's output, for the test's failure message.
		fmt.Fprintf(os.Stderr, "pty: %q\n", l)
		if !said {
			if m := shellLine.FindStringSubmatch(l); m != nil {
				fmt.Printf("SHELL %s\n", m[1])
				said = true
			}
		}
		if err != nil {
			if !said {
				return fmt.Errorf("reading the shell: %w", err)
			}
			// EIO: no process has the slave open any more.
			fmt.Printf("HUNG UP %v\n", err)
			return nil
		}
	}
}

var shellLine = regexp.MustCompile(`SHELL-([0-9]+)-42`)

func init() {
	if os.Getenv(clientEnv) == "" {
		return
	}
	var args []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.") {
			args = append(args, a)
		}
	}
	if err := clientRole(args); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// endWhileHeld ends session id under real systemd with the sluicectl
// command end (run as root in the container) while its owner is
// attached (a client holding its own copy of the master, as the
// frontend does, with the grant in grantFile, or a signed one if "") and
// the shell has a child and a child that left its session with setsid:
// every one of them must be gone when sluicectl says "ended", the owner
// must see the hangup, and neither ptystore nor the fd store may hold
// the session any more. It returns the command's output and when it
// started.
func endWhileHeld(t *testing.T, c *container, id, grantFile string, end ...string) (string, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(c.init), "-a", "--", "env", clientEnv+"=1",
		grantFileEnv+"="+grantFile,
		"setpriv", "--groups=sluice-web,sluice-ptystore-callers", testDir+"/"+filepath.Base(os.Args[0]), "hold", id)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// The client inside may outlive nsenter when killed: do not wait on
	// its pipes for ever.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	// Bounds on a wedged client, not timing assertions.
	var shell string
	for shell == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				waited = true
				t.Fatalf("hold: no SHELL line: %s", stderr.String())
			}
			shell, _ = strings.CutPrefix(l, "SHELL ")
		case <-time.After(time.Minute):
			t.Fatalf("hold: no SHELL line after a minute: %s", stderr.String())
		}
	}
	child := strings.TrimSpace(c.must("pgrep", "-f", "-x", childMark))
	setsid := strings.TrimSpace(c.must("pgrep", "-f", "-x", setsidMark))
	procs := map[string]string{"shell": shell, "child": child, "setsid child": setsid}
	for what, pid := range procs {
		if atoi(pid) <= 1 || strings.Contains(pid, "\n") {
			t.Fatalf("%s: pid %q", what, pid)
		}
		stat := strings.Fields(c.must("sh", "-c", "cut -d')' -f2- /proc/"+pid+"/stat"))
		cg := strings.TrimSpace(c.must("cat", "/proc/"+pid+"/cgroup"))
		t.Logf("%-12s pid %s session %s cgroup %s", what, pid, stat[3], strings.ReplaceAll(cg, "\n", " "))
	}
	if sid := strings.Fields(c.must("sh", "-c", "cut -d')' -f2- /proc/"+setsid+"/stat"))[3]; sid == shell {
		t.Fatalf("the setsid child is in the shell's session %s: the test would not test the cgroup", sid)
	}

	began := time.Now()
	out1 := c.must(append([]string{prefix + "/bin/sluicectl"}, end...)...)
	t.Logf("sluicectl %s took %v (nsenter included)", strings.Join(end, " "), time.Since(began).Round(time.Millisecond))
	if !strings.Contains(out1, "ended") {
		t.Errorf("sessions end: %s", out1)
	}
	// Checked right after the command returned: "ended" must mean ended,
	// not "systemd will get to it".
	for what, pid := range procs {
		if st, err := c.run("cat", "/proc/"+pid+"/stat"); err == nil {
			t.Errorf("%s (pid %s) still there after sessions end said %q: %s", what, pid, strings.TrimSpace(out1), st)
		}
	}
	var hung string
	for open := true; open; {
		select {
		case l, ok := <-lines:
			open = ok
			if strings.HasPrefix(l, "HUNG UP") {
				hung = l
			}
		case <-time.After(time.Minute):
			t.Fatalf("the attached owner saw no hangup in a minute: %s", stderr.String())
		}
	}
	err = cmd.Wait()
	waited = true
	if hung == "" || err != nil {
		t.Errorf("the attached owner did not see the hangup: %v %q\n%s", err, hung, stderr.String())
	}
	if sessions := c.must(prefix+"/bin/sluicectl", "sessions", "--json"); strings.Contains(sessions, id) {
		t.Errorf("ptystore still lists %s after end:\n%s", id, sessions)
	}
	if n := c.must("systemctl", "show", "-P", "NFileDescriptorStore", "sluice-ptystore.service"); strings.TrimSpace(n) != "0" {
		t.Errorf("fd store holds %q fds after end, want 0", strings.TrimSpace(n))
	}
	if j := c.must("journalctl", "--no-pager", "-o", "cat", "-u", "sluice-hangup@*"); !strings.Contains(j, "hangup: session ended") {
		t.Errorf("the hangup helper's journal lacks the ending:\n%s", j)
	} else {
		// This ending's line is the last one.
		var last string
		for _, l := range strings.Split(j, "\n") {
			if strings.Contains(l, "hangup: session ended") {
				last = l
			}
		}
		t.Logf("hangup helper: %s", last)
	}
	return out1, began
}
