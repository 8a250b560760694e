package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testbuf"
	"sluice/rpc"
	"sluice/rpc/buildid"
	"sluice/runner/internal/testwire"
	"sluice/runner/spawn"
)

var binDir string // testsvc (static) and sluice, built once

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-runner-test-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755) // units running as nobody exec from here
	binDir = dir
	for _, b := range []struct{ out, pkg, cgo string }{
		{"testsvc", "./testdata/testsvc", "0"},
		{"sluice", "../cmd/sluice", "1"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b.pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The service's wire contract, shared with the service itself.
var (
	clientHello = testwire.ClientHello
	serverHello = testwire.ServerHello
)

type (
	request = testwire.Request
	info    = testwire.Info
)

type harness struct {
	t      testing.TB
	r      *Runner
	rt     string
	state  string
	log    *testbuf.Buffer
	stdout *os.File // what the runner printed, to read after Stop
}

// start runs a runner with the given units (JSON) in fresh directories.
func start(t testing.TB, unitsJSON string, extra ...func(*Config)) *harness {
	t.Helper()
	cfg, err := ParseConfig([]byte(`{"stop_timeout": "5s", "units": ` + unitsJSON + `}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range extra {
		f(cfg)
	}
	base := openTempDir(t)
	h := &harness{t: t, rt: filepath.Join(base, "run"), state: filepath.Join(base, "state"), log: &testbuf.Buffer{}}
	out, err := os.Create(filepath.Join(base, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	h.stdout = out
	t.Cleanup(func() { out.Close() })
	r, err := New(Options{
		Config: cfg, RuntimeDir: h.rt, BinDir: binDir, StateDir: h.state,
		Log:    slog.New(slog.NewTextHandler(io.MultiWriter(h.log, testWriter{t}), nil)),
		Stdout: out, ReadyTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.r = r
	t.Cleanup(func() { r.Stop() })
	return h
}

// openTempDir is a t.TempDir that units running as nobody can traverse
// (testing makes its parent 0700).
func openTempDir(t testing.TB) string {
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755)
	os.Chmod(base, 0o755)
	return base
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (h *harness) client(unit string) *rpc.Client {
	return &rpc.Client{Path: h.r.SocketPath(unit), Hello: clientHello, Expect: serverHello, Timeout: 10 * time.Second}
}

func (h *harness) call(unit string, req request) (info, error) {
	var in info
	_, err := h.client(unit).Call(context.Background(), req, nil, &in)
	return in, err
}

func (h *harness) mustCall(unit string, req request) info {
	h.t.Helper()
	in, err := h.call(unit, req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", unit, req.Op, err)
	}
	return in
}

// eventually waits for cond, which the runner makes true asynchronously
// (a notification being processed, a restart). It asserts no timing: the
// limit only keeps a broken runner from hanging the suite.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testsvc() string { return filepath.Join(binDir, "testsvc") }

const echoUnit = `{"name": "echo", "exec": ["testsvc"], "accept": true, "credentials": ["grant.key"], "state_directory": true}`

func TestAcceptSpawnsOneProcessPerConnection(t *testing.T) {
	h := start(t, `[`+echoUnit+`]`)
	pids := map[int]bool{}
	for i := 0; i < 6; i++ {
		in := h.mustCall("echo", request{Op: "whoami"})
		if pids[in.PID] {
			t.Fatalf("pid %d served two connections", in.PID)
		}
		pids[in.PID] = true
		if in.ListenPID != fmt.Sprint(in.PID) || in.ListenFDs != "1" || in.ListenFDNames != "sluice-echo.socket" {
			t.Fatalf("activation env LISTEN_PID=%s LISTEN_FDS=%s LISTEN_FDNAMES=%s in pid %d",
				in.ListenPID, in.ListenFDs, in.ListenFDNames, in.PID)
		}
		for k, want := range map[string]string{
			"SLUICE_RUNTIME_DIR": h.rt, "SLUICE_MANIFEST": filepath.Join(h.rt, "build-ids.json"),
			"CREDENTIALS_DIRECTORY": filepath.Join(h.rt, "credentials", "echo"),
			"STATE_DIRECTORY":       filepath.Join(h.state, "echo"),
		} {
			if got := in.Getenv(k); got != want {
				t.Errorf("%s=%q, want %q", k, got, want)
			}
		}
		if in.GrantKeyLen != KeySize {
			t.Errorf("grant.key of %d bytes (%s), want %d", in.GrantKeyLen, in.GrantKeyErr, KeySize)
		}
	}
	// Concurrent connections: each its own process, all answered.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := h.call("echo", request{Op: "whoami"})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			if pids[in.PID] || in.ListenPID != fmt.Sprint(in.PID) {
				t.Errorf("pid %d reused or LISTEN_PID %s", in.PID, in.ListenPID)
			}
			pids[in.PID] = true
		}()
	}
	wg.Wait()
	// The generated key is 32 bytes, 0600, in the state directory, and the
	// unit's copy is read-only.
	st, err := os.Stat(filepath.Join(h.state, "credentials", "grant.key"))
	if err != nil || st.Size() != KeySize || st.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(h.rt, "credentials", "echo", "grant.key")); err != nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("unit's credential: %v %v", st, err)
	}
}

func TestSocketModeAndManifest(t *testing.T) {
	// A helper binary under a component's name lands in the manifest.
	bin := t.TempDir()
	b, _ := os.ReadFile(testsvc())
	os.WriteFile(filepath.Join(bin, "sluice-policy"), b, 0o755)
	cfg, _ := ParseConfig([]byte(`{"units": [{"name": "policy", "exec": ["sluice-policy"], "accept": true, "socket": {"mode": "0640"}}]}`))
	rt := filepath.Join(t.TempDir(), "run")
	r, err := New(Options{Config: cfg, RuntimeDir: rt, BinDir: bin, StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	m, err := buildid.Load(filepath.Join(rt, "build-ids.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Binaries) != 1 || m.Binaries[0].Component != "policy" {
		t.Fatalf("manifest binaries %+v", m.Binaries)
	}
	st, err := os.Stat(filepath.Join(rt, "policy.sock"))
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o640 {
		t.Fatalf("socket %v %v", st, err)
	}
	// A second runner on the same directory is refused, not let loose on
	// the first one's sockets.
	r2, err := New(Options{Config: cfg, RuntimeDir: rt, BinDir: bin, StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second runner: %v", err)
	}
	if _, err := os.Stat(filepath.Join(rt, "build-ids.json")); err != nil {
		t.Fatalf("the refused runner removed the first one's manifest: %v", err)
	}
}

func svcUnit(name, extra string) string {
	return fmt.Sprintf(`{"name": %q, "exec": ["testsvc", "--notify"%s], "notify": true, "fdstore_max": 3, "restart_sec": "5ms", "restart_max_sec": "40ms"}`, name, extra)
}

func TestRestartWithBackoff(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "count")
	h := start(t, `[`+svcUnit("svc", fmt.Sprintf(`, "--crash-until", "3", "--counter", %q`, counter))+`]`)
	// Started, crashed three times, restarted each time, and up now.
	in := h.mustCall("svc", request{Op: "whoami"})
	if n := h.r.Starts("svc"); n != 4 {
		t.Fatalf("%d starts, want 4 (three crashes)", n)
	}
	if in.PID != h.r.MainPID("svc") || in.ListenPID != fmt.Sprint(in.PID) {
		t.Fatalf("served by %d (LISTEN_PID %s), main is %d", in.PID, in.ListenPID, h.r.MainPID("svc"))
	}
	if !strings.Contains(h.log.String(), "crashing on purpose, start 3") {
		t.Errorf("the crashes' stderr did not reach the log:\n%s", h.log)
	}
	// Killed: comes back with a new pid and serves again.
	syscall.Kill(in.PID, syscall.SIGKILL)
	eventually(t, "restart after SIGKILL", func() bool { p := h.r.MainPID("svc"); return p != 0 && p != in.PID })
	in2 := h.mustCall("svc", request{Op: "whoami"})
	if in2.PID == in.PID {
		t.Fatal("same pid after restart")
	}
}

func TestBackoffDoubles(t *testing.T) {
	d, max := 100*time.Millisecond, time.Second
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, d)
		d = nextDelay(d, max)
	}
	want := []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
}

func TestFDStoreAcrossRestart(t *testing.T) {
	h := start(t, `[`+svcUnit("svc", "")+`]`)
	h.mustCall("svc", request{Op: "store", Name: "store.data", Data: "kept across a crash"})
	eventually(t, "fd stored", func() bool { return slices.Equal(h.r.StoredFDs("svc"), []string{"store.data"}) })
	old := h.r.MainPID("svc")
	syscall.Kill(old, syscall.SIGKILL)
	eventually(t, "restart", func() bool { p := h.r.MainPID("svc"); return p != 0 && p != old })
	in := h.mustCall("svc", request{Op: "whoami"})
	if in.ListenFDs != "2" || in.ListenFDNames != "sluice-svc.socket:store.data" {
		t.Fatalf("after restart LISTEN_FDS=%s LISTEN_FDNAMES=%s", in.ListenFDs, in.ListenFDNames)
	}
	// The writer died with the old process: the data it left is all there
	// is, then EOF.
	if got := h.mustCall("svc", request{Op: "read", Name: "store.data"}).Data; got != "kept across a crash" {
		t.Fatalf("read %q through the stored fd", got)
	}
}

func TestFDStoreRemoveHangupAndLimit(t *testing.T) {
	h := start(t, `[`+svcUnit("svc", "")+`]`)
	h.mustCall("svc", request{Op: "store", Name: "store.a", Data: "a"})
	h.mustCall("svc", request{Op: "store", Name: "store.polled", Data: "p", Poll: true})
	h.mustCall("svc", request{Op: "store", Name: "store.unpolled", Data: "u"})
	eventually(t, "three stored", func() bool { return len(h.r.StoredFDs("svc")) == 3 })

	// Full (fdstore_max 3): a fourth is refused and closed.
	h.mustCall("svc", request{Op: "store", Name: "store.extra", Data: "x"})
	h.mustCall("svc", request{Op: "remove", Name: "store.a"})
	want := []string{"store.polled", "store.unpolled"}
	eventually(t, "store.a removed", func() bool { return slices.Equal(h.r.StoredFDs("svc"), want) })

	// Both writers gone: the polled read end reports POLLHUP and is
	// dropped; the FDPOLL=0 one stays.
	h.mustCall("svc", request{Op: "hup", Name: "store.unpolled"})
	h.mustCall("svc", request{Op: "hup", Name: "store.polled"})
	eventually(t, "polled fd dropped", func() bool { return slices.Equal(h.r.StoredFDs("svc"), []string{"store.unpolled"}) })
	if !strings.Contains(h.log.String(), "fd store full") {
		t.Errorf("a store beyond fdstore_max was not reported")
	}
}

func TestNotifyOnlyFromMainProcess(t *testing.T) {
	h := start(t, `[`+svcUnit("svc", "")+`]`)
	// Another process (this test) sends an fd to the unit's notify socket:
	// ignored. The service's own store after it shows ours was processed.
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	addr := h.r.notifyPath("svc")
	if err := sendNotify(addr, "FDSTORE=1\nFDNAME=store.intruder", r); err != nil {
		t.Fatal(err)
	}
	h.mustCall("svc", request{Op: "store", Name: "store.own", Data: "x"})
	eventually(t, "own fd stored", func() bool { return len(h.r.StoredFDs("svc")) > 0 })
	if got := h.r.StoredFDs("svc"); !slices.Equal(got, []string{"store.own"}) {
		t.Fatalf("store holds %v", got)
	}
}

func sendNotify(addr, state string, f *os.File) error {
	s, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(s)
	return syscall.Sendmsg(s, []byte(state), syscall.UnixRights(int(f.Fd())), &syscall.SockaddrUnix{Name: addr}, 0)
}

func TestTCPSocketAndAnnounce(t *testing.T) {
	h := start(t, `[{"name": "web", "exec": ["testsvc", "--notify"], "notify": true, "tcp": "127.0.0.1:0"}]`,
		func(c *Config) {
			c.OnReady = [][]string{{"testsvc", "echo", "enroll", "${user}"}, {"no-such-tool", "x"}}
		})
	in := h.mustCall("web", request{Op: "whoami"})
	if in.ListenFDs != "2" || in.ListenFDNames != "sluice-web.socket:http" {
		t.Fatalf("LISTEN_FDS=%s LISTEN_FDNAMES=%s", in.ListenFDs, in.ListenFDNames)
	}
	_, port, _ := strings.Cut(h.r.TCPAddr("web"), ":")
	out, _ := os.ReadFile(h.stdout.Name())
	if !strings.Contains(string(out), "sluice: open http://localhost:"+port+"\n") {
		t.Errorf("URL not announced; stdout:\n%s", out)
	}
	if !strings.Contains(string(out), "sluice: $ testsvc echo enroll "+h.r.invokingUser()+"\n  enroll "+h.r.invokingUser()+"\n") {
		t.Errorf("on_ready step did not run; stdout:\n%s", out)
	}
	if !strings.Contains(h.log.String(), "binary missing") {
		t.Errorf("missing on_ready binary not logged")
	}
}

func TestUserSwitch(t *testing.T) {
	if os.Geteuid() != 0 {
		// Without root every unit runs as the invoking user.
		h := start(t, `[{"name": "u", "exec": ["testsvc"], "accept": true, "user": "nobody"}]`)
		if in := h.mustCall("u", request{Op: "whoami"}); in.UID != os.Getuid() {
			t.Fatalf("uid %d, want ours %d", in.UID, os.Getuid())
		}
		return
	}
	// The first user does not exist: the fallback is used. Missing
	// supplementary groups are left out.
	h := start(t, `[
		{"name": "u", "exec": ["testsvc"], "accept": true, "user": ["sluice-no-such-user", "nobody"],
		 "group": ["sluice-no-such-group", "nogroup"], "supplementary_groups": ["sluice-no-such-group", "users"],
		 "credentials": ["grant.key"], "socket": {"mode": "0600", "user": "${uid:u}"}},
		{"name": "svc", "exec": ["testsvc", "--notify"], "notify": true, "user": "nobody", "group": "nogroup", "fdstore_max": 1}]`)
	in := h.mustCall("u", request{Op: "whoami"})
	slices.Sort(in.Groups) // the kernel keeps them sorted anyway
	if in.UID != 65534 || in.GID != 65534 || !slices.Equal(in.Groups, []int{100, 65534}) {
		t.Fatalf("uid %d gid %d groups %v, want 65534 65534 [100 65534]", in.UID, in.GID, in.Groups)
	}
	if in.GrantKeyLen != KeySize || in.Getenv("USER") != "nobody" {
		t.Fatalf("as nobody: grant key %d bytes (%s), USER=%s", in.GrantKeyLen, in.GrantKeyErr, in.Getenv("USER"))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(h.r.SocketPath("u"), &st); err != nil || st.Uid != 65534 {
		t.Fatalf("socket owner %d, %v; want ${uid:u} = 65534", st.Uid, err)
	}
	// An Accept=no unit as nobody reaches its notify socket (it stores).
	h.mustCall("svc", request{Op: "store", Name: "store.x", Data: "x"})
	eventually(t, "nobody's fd stored", func() bool { return len(h.r.StoredFDs("svc")) == 1 })
	if in := h.mustCall("svc", request{Op: "whoami"}); in.UID != 65534 {
		t.Fatalf("svc uid %d", in.UID)
	}
}

func TestMissingBinary(t *testing.T) {
	cfg, _ := ParseConfig([]byte(`{"units": [{"name": "auth", "exec": ["sluice-auth"], "accept": true},
		{"name": "ok", "exec": ["testsvc"], "accept": true}]}`))
	_, err := New(Options{Config: cfg, RuntimeDir: t.TempDir(), BinDir: binDir, StateDir: t.TempDir()})
	want := "unit auth: " + filepath.Join(binDir, "sluice-auth") + ": no such file"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "unit ok") {
		t.Fatalf("err %v, want one mentioning %q only", err, want)
	}
}

func TestConfig(t *testing.T) {
	def, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range def.Units {
		names = append(names, u.Name)
	}
	if !slices.Equal(names, []string{"auth", "policy", "shell", "ptystore", "hangup", "record", "frontend"}) {
		t.Fatalf("default units %v", names)
	}
	for name, accept := range map[string]bool{"auth": true, "policy": true, "shell": true, "ptystore": false, "hangup": true, "record": true, "frontend": false} {
		if def.Unit(name).Accept != accept {
			t.Errorf("%s accept=%v", name, !accept)
		}
	}
	if def.Unit("ptystore").FDStoreMax == 0 || def.Unit("frontend").TCP != "127.0.0.1:8080" {
		t.Errorf("ptystore fd store or frontend tcp missing")
	}
	// A config written back out reads the same.
	b, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig(b)
	if err != nil || !reflect.DeepEqual(again, def) {
		t.Fatalf("round trip: %v\n%s", err, b)
	}
	for _, tc := range []struct{ name, json, err string }{
		{"unknown field", `{"units": [{"name": "a", "exec": ["x"], "acept": true}]}`, "unknown field"},
		{"no exec", `{"units": [{"name": "a"}]}`, "exec is empty"},
		{"twice", `{"units": [{"name": "a", "exec": ["x"]}, {"name": "a", "exec": ["x"]}]}`, "defined twice"},
		{"accept with store", `{"units": [{"name": "a", "exec": ["x"], "accept": true, "fdstore_max": 2}]}`, "need accept=false"},
		{"bad mode", `{"units": [{"name": "a", "exec": ["x"], "socket": {"mode": "0999"}}]}`, "octal"},
		{"bad credential", `{"units": [{"name": "a", "exec": ["x"], "credentials": ["../k"]}]}`, "credential"},
		{"nothing to listen", `{"units": [{"name": "a", "exec": ["x"], "no_socket": true}]}`, "nothing to listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	cfg, _ := ParseConfig([]byte(`{"units": [{"name": "a", "exec": ["testsvc"], "accept": true},
		{"name": "web", "exec": ["testsvc"], "tcp": "0.0.0.0:8080"}, {"name": "any", "exec": ["testsvc"], "tcp": "127.0.0.1:0"}]}`))
	r, err := New(Options{Config: cfg, RuntimeDir: "/r", BinDir: binDir, StateDir: "/s"})
	if err != nil {
		t.Fatal(err)
	}
	uid := fmt.Sprint(os.Getuid())
	if os.Geteuid() == 0 {
		uid = "0" // unit a runs as root when the runner is root
	}
	for in, want := range map[string]string{
		"uid:${uid:a}":           "uid:" + uid,
		"${runtime_dir}/x":       "/r/x",
		"${state_dir}${bin_dir}": "/s" + binDir,
		"plain":                  "plain",
		"${url:web}/enroll":      "http://localhost:8080/enroll",
	} {
		if got, err := r.Expand(in); err != nil || got != want {
			t.Errorf("Expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"${uid:nosuch}", "${nope}", "${uid", "${file:nosuch}", "${url:a}", "${url:any}", "${url}"} {
		if _, err := r.Expand(bad); err == nil {
			t.Errorf("Expand(%q) did not fail", bad)
		}
	}
}

// TestSluiceRunCleanShutdown drives the real binary: started, serving,
// SIGTERM, and afterwards no sockets and no processes, even from a unit
// that ignores SIGTERM (it gets SIGKILL after stop_timeout).
func TestSluiceRunCleanShutdown(t *testing.T) {
	base := openTempDir(t)
	rt := filepath.Join(base, "run")
	cfg := map[string]any{
		"stop_timeout": "300ms",
		"units": []map[string]any{
			{"name": "echo", "exec": []string{"testsvc"}, "accept": true},
			{"name": "svc", "exec": []string{"testsvc", "--notify", "--ignore-term"}, "notify": true, "tcp": "127.0.0.1:0"},
		},
	}
	b, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(base, "config.json")
	os.WriteFile(cfgPath, b, 0o644)

	outR, outW, _ := os.Pipe()
	defer outR.Close()
	errPath := filepath.Join(base, "stderr")
	errF, _ := os.Create(errPath)
	defer errF.Close()
	p, err := spawn.Start(&spawn.Attr{
		Path: filepath.Join(binDir, "sluice"),
		Args: []string{"sluice", "run", "--config", cfgPath, "--runtime-dir", rt, "--bin-dir", binDir, "--state-dir", filepath.Join(base, "state")},
		Env:  []string{"PATH=/usr/bin:/bin", "USER=tester"}, Files: []syscall.Conn{nil, outW, errF}, Umask: -1,
	})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Signal(syscall.SIGKILL)
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "sluice: open http://localhost:") {
		e, _ := os.ReadFile(errPath)
		t.Fatalf("first line %q, %v; stderr:\n%s", line, err, e)
	}
	h := &harness{t: t, r: &Runner{opts: Options{RuntimeDir: rt}, units: map[string]*unit{}}}
	echo := h.mustCall("echo", request{Op: "whoami"})
	svc := h.mustCall("svc", request{Op: "whoami"})
	if echo.Getenv("SLUICE_RUNTIME_DIR") != rt || svc.Getenv("NOTIFY_SOCKET") == "" {
		t.Fatalf("env: SLUICE_RUNTIME_DIR=%q NOTIFY_SOCKET=%q", echo.Getenv("SLUICE_RUNTIME_DIR"), svc.Getenv("NOTIFY_SOCKET"))
	}
	p.Signal(syscall.SIGTERM)
	if st := spawn.Describe(p.Wait()); st != "exit 0" {
		e, _ := os.ReadFile(errPath)
		t.Fatalf("sluice run ended with %s; stderr:\n%s", st, e)
	}
	for _, name := range []string{"echo.sock", "svc.sock", "build-ids.json", "notify", "credentials"} {
		if _, err := os.Lstat(filepath.Join(rt, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", name, err)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", svc.PID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("svc (pid %d, ignores SIGTERM) still exists", svc.PID)
	}
	e, _ := os.ReadFile(errPath)
	if !strings.Contains(string(e), "killed after stop timeout") || !strings.Contains(string(e), "unit=svc") {
		t.Errorf("no SIGKILL logged for svc; stderr:\n%s", e)
	}
}

// TestManifestCommand: `sluice manifest BINDIR OUT`, as `make build` runs it.
func TestManifestCommand(t *testing.T) {
	bin := t.TempDir()
	b, _ := os.ReadFile(testsvc())
	os.WriteFile(filepath.Join(bin, "sluice-shell"), b, 0o755)
	out := filepath.Join(t.TempDir(), "ids.json")
	p, err := spawn.Start(&spawn.Attr{Path: filepath.Join(binDir, "sluice"), Args: []string{"sluice", "manifest", bin, out}, Umask: -1})
	if err != nil {
		t.Fatal(err)
	}
	if st := spawn.Describe(p.Wait()); st != "exit 0" {
		t.Fatalf("sluice manifest: %s", st)
	}
	m, err := buildid.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := buildid.OfFile(filepath.Join(bin, "sluice-shell"), m.Entries[0].Intent)
	if m.Binaries[0].Component != "shell" || m.Entries[0].BuildID != ids[0] {
		t.Fatalf("manifest %+v", m)
	}
}

// TestUnitsGetNoInheritedFDs: an fd the runner holds without close-on-exec
// (`sluice run 9</root-only-file`) reaches neither a long-running unit nor
// a per-connection instance: each has only what systemd would give it.
func TestUnitsGetNoInheritedFDs(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "root-only")
	os.WriteFile(secret, []byte("x"), 0o600)
	fd, err := syscall.Open(secret, syscall.O_RDONLY, 0) // no O_CLOEXEC, as a shell's 9< gives it
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	h := start(t, `[`+svcUnit("svc", "")+`, {"name": "echo", "exec": ["testsvc"], "accept": true}]`)
	holds := func(pid int) []string {
		var bad []string
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range ents {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == secret {
				bad = append(bad, e.Name())
			}
		}
		return bad
	}
	if bad := holds(h.r.MainPID("svc")); len(bad) > 0 {
		t.Errorf("long-running unit holds the runner's fd as %v", bad)
	}
	in := h.mustCall("echo", request{Op: "whoami"})
	if in.PID == 0 {
		t.Fatalf("whoami: no pid: %+v", in)
	}
	if slices.Contains(in.FDLinks, secret) {
		t.Errorf("per-connection instance holds the runner's fd: %v", in.FDLinks)
	}
	if in := h.mustCall("svc", request{Op: "whoami"}); slices.Contains(in.FDLinks, secret) {
		t.Errorf("long-running unit holds the runner's fd: %v", in.FDLinks)
	}
}
