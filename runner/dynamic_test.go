package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"sluice/helpers/policy"
	"sluice/runner/spawn"
)

func TestAllocateDynamic(t *testing.T) {
	dyn := func(unitName, userName string) *unit {
		return &unit{cfg: &Unit{Name: unitName}, id: identity{name: userName, dynamic: true, switchTo: true}}
	}
	static := func(uid, gid uint32) *unit {
		return &unit{cfg: &Unit{Name: "static"}, id: identity{uid: uid, gid: gid, name: "x", switchTo: true}}
	}
	next := func(id uint32) uint32 {
		if id == DynamicUIDMax {
			return DynamicUIDMin
		}
		return id + 1
	}
	a, b := dynamicStart("sluice-a"), dynamicStart("sluice-b")
	if a == b {
		t.Fatal("test names hash to the same id; pick others")
	}
	for _, tc := range []struct {
		name    string
		static  []*unit
		users   []string // dynamic units' user names, in config order
		inUse   func(uint32) bool
		want    []uint32
		wantErr string
	}{
		{name: "each its own start", users: []string{"sluice-a", "sluice-b"},
			want: []uint32{a, b}},
		{name: "same name shares", users: []string{"sluice-a", "sluice-a"},
			want: []uint32{a, a}},
		{name: "taken in passwd or group: the next one", users: []string{"sluice-a"},
			inUse: func(id uint32) bool { return id == a }, want: []uint32{next(a)}},
		{name: "another unit's uid", static: []*unit{static(a, 0)}, users: []string{"sluice-a"},
			want: []uint32{next(a)}},
		{name: "another unit's gid", static: []*unit{static(0, a)}, users: []string{"sluice-a"},
			want: []uint32{next(a)}},
		{name: "an earlier dynamic unit's", users: []string{"sluice-a", "sluice-x"},
			inUse: func(id uint32) bool { return id != a && id != next(a) }, want: []uint32{a, next(a)}},
		{name: "wraps at the top of the range", users: []string{"sluice-a"},
			inUse: func(id uint32) bool { return id >= a || id < DynamicUIDMin+3 }, want: []uint32{DynamicUIDMin + 3}},
		{name: "range full", users: []string{"sluice-a"},
			inUse: func(uint32) bool { return true }, wantErr: "no free id left in 61184-65519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			units := slices.Clone(tc.static)
			var pending []*unit
			for i, n := range tc.users {
				u := dyn(fmt.Sprint("u", i), n)
				units = append(units, u)
				pending = append(pending, u)
			}
			inUse := tc.inUse
			if inUse == nil {
				inUse = func(uint32) bool { return false }
			}
			err := allocateDynamic(units, pending, inUse, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []uint32
			for _, u := range pending {
				if u.id.gid != u.id.uid {
					t.Errorf("%s: gid %d != uid %d", u.cfg.Name, u.id.gid, u.id.uid)
				}
				got = append(got, u.id.uid)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("ids %v, want %v", got, tc.want)
			}
		})
	}
}

// defaultWithTestsvc is the embedded default config with testsvc standing
// in for every helper: the same users, sockets, allowlists, credentials
// and files. The frontend stand-in gets a unix socket too, to be asked
// who it is.
func defaultWithTestsvc(t *testing.T) *Config {
	def, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	def.OnReady = nil
	def.StopTimeout = Duration(5e9)
	for i := range def.Units {
		u := &def.Units[i]
		u.Exec = []string{"testsvc"}
		if u.Notify {
			u.Exec = append(u.Exec, "--notify")
		}
		if u.TCP != "" {
			u.TCP = "127.0.0.1:0"
		}
		u.NoSocket = false
	}
	return def
}

// TestDynamicUsersDefaultConfig: as root, on a machine without the sluice
// accounts, the default config runs auth, policy, ptystore and frontend
// as four uids of their own, owning their sockets, credentials and state
// as configured, and the calls the suite makes still go through while
// the others are refused by the kernel.
func TestDynamicUsersDefaultConfig(t *testing.T) {
	def := defaultWithTestsvc(t)
	h := start(t, "[]", func(c *Config) { *c = *def })
	helpers := []string{"auth", "policy", "ptystore", "frontend"}
	who := map[string]info{}
	for _, name := range append(helpers, "shell", "record") {
		who[name] = h.mustCall(name, request{Op: "whoami"})
	}
	if os.Geteuid() != 0 {
		for name, in := range who {
			if in.UID != os.Getuid() {
				t.Errorf("%s: uid %d, want ours (%d) without root", name, in.UID, os.Getuid())
			}
		}
		return
	}
	uids := map[int]string{}
	for _, name := range helpers {
		in := who[name]
		acct := "sluice-" + name
		want := func(uid int) bool { return uid >= DynamicUIDMin && uid <= DynamicUIDMax }
		if a, err := user.Lookup(acct); err == nil {
			// A machine with the sysusers accounts: those are used.
			want = func(uid int) bool { return fmt.Sprint(uid) == a.Uid }
		} else if in.GID != in.UID || in.Getenv("HOME") != "/" || in.Getenv("SHELL") != nologin {
			t.Errorf("%s: gid %d (uid %d), HOME=%q SHELL=%q; want gid = uid, / and %s",
				name, in.GID, in.UID, in.Getenv("HOME"), in.Getenv("SHELL"), nologin)
		}
		if !want(in.UID) {
			t.Errorf("%s runs as uid %d", name, in.UID)
		}
		if other, dup := uids[in.UID]; dup {
			t.Errorf("%s and %s share uid %d", name, other, in.UID)
		}
		uids[in.UID] = name
		if in.Getenv("USER") != acct || in.Getenv("LOGNAME") != acct {
			t.Errorf("%s: USER=%q LOGNAME=%q, want %s", name, in.Getenv("USER"), in.Getenv("LOGNAME"), acct)
		}
		if got, want := in.Getenv("SLUICE_ALLOW_WEB_TO_"+strings.ToUpper(name)), fmt.Sprintf("uid:%d", who["frontend"].UID); name != "frontend" && got != want {
			t.Errorf("%s: allowlist %q, want %q (${uid:frontend})", name, got, want)
		}
	}
	if who["shell"].UID != 0 {
		t.Errorf("shell runs as %d, want root", who["shell"].UID)
	}
	// Credentials reach their unit through its own uid (0400, dir 0500).
	for _, name := range []string{"auth", "policy", "ptystore"} {
		if in := who[name]; in.GrantKeyLen != KeySize {
			t.Errorf("%s: grant key %d bytes (%s)", name, in.GrantKeyLen, in.GrantKeyErr)
		}
	}
	owner := func(path string) (int, os.FileMode) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return int(st.Uid), os.FileMode(st.Mode & 0o7777)
	}
	for sock, unitName := range map[string]string{"auth": "frontend", "shell": "policy"} {
		if uid, mode := owner(h.r.SocketPath(sock)); uid != who[unitName].UID || mode != 0o600 {
			t.Errorf("%s.sock: owner %d mode %04o, want %s's uid %d, 0600", sock, uid, mode, unitName, who[unitName].UID)
		}
	}
	// policy.sock has three callers: the frontend by owner, ptystore by
	// group (a dynamic user's gid is its uid), and the recording helper,
	// which joins that group (${gid:ptystore}); policy's allowlists tell
	// ptystore and the recorder apart by uid.
	if got, want := who["policy"].Getenv("SLUICE_ALLOW_RECORD_TO_POLICY"), fmt.Sprintf("uid:%d", who["record"].UID); got != want {
		t.Errorf("policy: record allowlist %q, want %q", got, want)
	}
	var pst syscall.Stat_t
	if err := syscall.Stat(h.r.SocketPath("policy"), &pst); err != nil {
		t.Fatal(err)
	} else if int(pst.Uid) != who["frontend"].UID || int(pst.Gid) != who["ptystore"].UID || pst.Mode&0o7777 != 0o660 {
		t.Errorf("policy.sock: %d:%d %04o, want frontend's uid, ptystore's gid, 0660", pst.Uid, pst.Gid, pst.Mode&0o7777)
	}
	// ptystore.sock has two: the frontend by owner, policy by group (it
	// puts every session it opens).
	if err := syscall.Stat(h.r.SocketPath("ptystore"), &pst); err != nil {
		t.Fatal(err)
	} else if int(pst.Uid) != who["frontend"].UID || int(pst.Gid) != who["policy"].UID || pst.Mode&0o7777 != 0o660 {
		t.Errorf("ptystore.sock: %d:%d %04o, want frontend's uid, policy's gid, 0660", pst.Uid, pst.Gid, pst.Mode&0o7777)
	}
	if uid, mode := owner(filepath.Join(h.state, "auth")); uid != who["auth"].UID || mode != 0o700 {
		t.Errorf("auth's state directory: owner %d mode %04o", uid, mode)
	}

	// The suite's own calls work: frontend to auth, policy to shell,
	// ptystore to policy.
	for _, c := range []struct{ from, to string }{{"frontend", "auth"}, {"frontend", "ptystore"}, {"policy", "shell"}, {"frontend", "policy"}, {"ptystore", "policy"}, {"record", "policy"}, {"policy", "ptystore"}} {
		in, err := h.call(c.from, request{Op: "call", Name: h.r.SocketPath(c.to)})
		if err != nil || in.UID != who[c.to].UID {
			t.Errorf("%s -> %s: %v (callee uid %d)", c.from, c.to, err, in.UID)
		}
	}
	// Any other pair: the socket's mode keeps them out.
	for _, c := range []struct{ from, to string }{{"ptystore", "auth"}, {"auth", "policy"}, {"frontend", "shell"}, {"auth", "shell"}, {"record", "auth"}, {"record", "shell"}, {"record", "ptystore"}} {
		if _, err := h.call(c.from, request{Op: "call", Name: h.r.SocketPath(c.to)}); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s -> %s: %v, want permission denied", c.from, c.to, err)
		}
	}

	// The policy helper is pointed at the admin's policy, else at a
	// development one letting whoever started the runner be themselves.
	pol := h.r.files["policy"].path
	if _, err := os.Stat("/etc/sluice/policy"); err == nil {
		if pol != "/etc/sluice/policy" {
			t.Errorf("policy file %s while /etc/sluice/policy exists", pol)
		}
	} else {
		// What sluice-policy makes of it: the invoking user as themselves
		// on the host, nothing else.
		f, err := os.Open(pol)
		if err != nil {
			t.Fatal(err)
		}
		p, err := policy.Parse(f, pol)
		f.Close()
		if err != nil {
			t.Fatalf("development policy: %v", err)
		}
		me := h.r.invokingUser()
		for _, c := range []struct {
			req   policy.Request
			allow bool
		}{
			{policy.Request{User: me, UnixUser: me, Machine: ".host"}, true},
			{policy.Request{User: me, UnixUser: me, Machine: "web1"}, false},
			{policy.Request{User: me + "x", UnixUser: me + "x", Machine: ".host"}, false},
			{policy.Request{User: me, UnixUser: me, Machine: ".host", Args: []string{"/bin/true"}}, false},
		} {
			if d := p.Decide(c.req); d.Allow != c.allow {
				t.Errorf("development policy: %+v allowed=%v", c.req, d.Allow)
			}
		}
	}

	// The same names get the same ids on the next run, once this one has
	// given them back.
	h.r.Stop()
	again, err := New(Options{Config: defaultWithTestsvc(t), RuntimeDir: t.TempDir(), BinDir: binDir, StateDir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Stop()
	for _, name := range helpers {
		if got := int(again.units[name].id.uid); got != who[name].UID {
			t.Errorf("%s: uid %d on the next run, was %d", name, got, who[name].UID)
		}
	}
}

// TestFiles: a file takes the first existing path of its list, else its
// default is written to the state directory, afresh at every start.
func TestFiles(t *testing.T) {
	base := openTempDir(t)
	existing := filepath.Join(base, "mine")
	os.WriteFile(existing, []byte("admin's\n"), 0o644)
	cfg, err := ParseConfig([]byte(`{"files": [
		{"name": "mine", "use": ["` + base + `/missing", "` + existing + `"], "default": "unused"},
		{"name": "dev", "use": ["` + base + `/missing"], "default": "allow ${user} as ${user} on .host # ${uid:svc}\n"}],
	 "units": [{"name": "svc", "exec": ["testsvc", "${file:mine}"], "accept": true,
		"env": {"MINE": "${file:mine}", "DEV": "${file:dev}"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(base, "state")
	dev := filepath.Join(state, "files", "dev")
	for run := 0; run < 2; run++ {
		r, err := New(Options{Config: cfg, RuntimeDir: filepath.Join(base, "run"), BinDir: binDir, StateDir: state,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		h := &harness{t: t, r: r}
		in := h.mustCall("svc", request{Op: "whoami"})
		r.Stop()
		if in.Getenv("MINE") != existing || in.Getenv("DEV") != dev {
			t.Fatalf("MINE=%q DEV=%q, want %s and %s", in.Getenv("MINE"), in.Getenv("DEV"), existing, dev)
		}
		b, err := os.ReadFile(dev)
		st, _ := os.Stat(dev)
		uid := strconv.FormatUint(uint64(r.units["svc"].id.uid), 10)
		if want := "allow " + r.invokingUser() + " as " + r.invokingUser() + " on .host # " + uid + "\n"; err != nil || string(b) != want || st.Mode().Perm() != 0o644 {
			t.Fatalf("run %d: %s: %q (%v, %v), want %q, 0644", run, dev, b, st.Mode(), err, want)
		}
		// Whatever was there is replaced at the next start.
		os.WriteFile(dev, []byte("edited\n"), 0o600)
	}
	if b, _ := os.ReadFile(existing); string(b) != "admin's\n" {
		t.Fatalf("an existing file was written to: %q", b)
	}
	for _, tc := range []struct{ name, json, err string }{
		{"twice", `{"files": [{"name": "a"}, {"name": "a"}]}`, "defined twice"},
		{"bad name", `{"files": [{"name": "../a"}]}`, "name must be"},
		{"default refers to a file", `{"files": [{"name": "a", "default": "${file:b}"}]}`, "cannot refer to files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
}

// TestDynamicUserAvoidsAccounts runs the real `sluice run` in a mount
// namespace whose /etc/passwd and /etc/group hold an account and a group
// at the ids two dynamic users would start from: each unit must move on
// to the next id, which NSS says is free.
func TestDynamicUserAvoidsAccounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dynamic users exist only when the runner is root (CI runs as root)")
	}
	base := openTempDir(t)
	a, b := dynamicStart("sluice-dyn-a"), dynamicStart("sluice-dyn-b")
	next := func(id uint32) uint32 {
		if id == DynamicUIDMax {
			return DynamicUIDMin
		}
		return id + 1
	}
	for _, f := range []struct{ path, line string }{
		{"/etc/passwd", fmt.Sprintf("sluice-taken:x:%d:%d::/:%s\n", a, a, nologin)},
		{"/etc/group", fmt.Sprintf("sluice-taken:x:%d:\n", b)},
	} {
		orig, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, filepath.Base(f.path)), append(orig, f.line...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(base, "config.json")
	os.WriteFile(cfgPath, []byte(`{"stop_timeout": "3s", "units": [
		{"name": "a", "exec": ["testsvc"], "accept": true, "user": "sluice-dyn-a", "dynamic_user": true},
		{"name": "b", "exec": ["testsvc"], "accept": true, "user": "sluice-dyn-b", "dynamic_user": true}]}`), 0o644)
	rt := filepath.Join(base, "run")
	script := `mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group && shift && exec "$@"`
	errF, _ := os.Create(filepath.Join(base, "stderr"))
	defer errF.Close()
	p, err := spawn.Start(&spawn.Attr{
		Path: "/usr/bin/unshare",
		Args: []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", base,
			filepath.Join(binDir, "sluice"), "run", "--config", cfgPath, "--runtime-dir", rt, "--bin-dir", binDir,
			"--state-dir", filepath.Join(base, "state")},
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Files: []syscall.Conn{nil, errF, errF}, Umask: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Signal(syscall.SIGTERM)
		p.Wait()
	}()
	// The manifest is written before any socket, and the sockets before
	// the runner accepts: once both sockets are there, calls queue.
	eventually(t, "sockets", func() bool {
		select {
		case <-p.Done():
			e, _ := os.ReadFile(errF.Name())
			t.Fatalf("sluice run under unshare: %s\n%s", spawn.Describe(p.Wait()), e)
		default:
		}
		_, ea := os.Stat(filepath.Join(rt, "a.sock"))
		_, eb := os.Stat(filepath.Join(rt, "b.sock"))
		return ea == nil && eb == nil
	})
	h := &harness{t: t, r: &Runner{opts: Options{RuntimeDir: rt}, units: map[string]*unit{}}}
	ina, erra := h.call("a", request{Op: "whoami"})
	inb, errb := h.call("b", request{Op: "whoami"})
	if erra != nil || errb != nil {
		e, _ := os.ReadFile(errF.Name())
		t.Fatalf("whoami: %v, %v; runner log:\n%s", erra, errb, e)
	}
	if ina.UID != int(next(a)) || inb.UID != int(next(b)) || inb.GID != inb.UID {
		t.Fatalf("a runs as %d (account at %d), b as %d:%d (group at %d); want %d and %d",
			ina.UID, a, inb.UID, inb.GID, b, next(a), next(b))
	}
}

// TestDynamicUsersReserved: two runners with the same config (each its
// own directories) get disjoint ids, as systemd's allocator would see:
// each id is flock'ed in systemd's lock directory with the user's name,
// an id a running process holds is skipped, and Stop gives them back.
func TestDynamicUsersReserved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dynamic users exist only when the runner is root (CI runs as root)")
	}
	newRunner := func() *Runner {
		t.Helper()
		r, err := New(Options{Config: defaultWithTestsvc(t), RuntimeDir: openTempDir(t), BinDir: binDir,
			StateDir: openTempDir(t), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// A process that runs as the id the frontend would start from.
	squat := dynamicStart("sluice-frontend")
	p, err := spawn.Start(&spawn.Attr{Path: "/bin/sleep", Args: []string{"sleep", "60"}, Umask: -1,
		Credential: &syscall.Credential{Uid: squat, Gid: squat}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Signal(syscall.SIGKILL); p.Wait() }()

	a, b := newRunner(), newRunner()
	seen := map[uint32]string{}
	for _, r := range []*Runner{a, b} {
		for _, u := range r.order {
			if !u.id.dynamic {
				continue
			}
			if u.id.uid == squat {
				t.Errorf("unit %s got uid %d, which a running process has", u.cfg.Name, squat)
			}
			if prev, ok := seen[u.id.uid]; ok {
				t.Errorf("uid %d given to %s and to %s", u.id.uid, prev, u.cfg.Name)
			}
			seen[u.id.uid] = u.cfg.Name
			lock := filepath.Join(uidLockDir, strconv.FormatUint(uint64(u.id.uid), 10))
			if b, err := os.ReadFile(lock); err != nil || string(b) != u.id.name+"\n" {
				t.Errorf("lock file %s: %q, %v; want the user's name", lock, b, err)
			}
		}
	}
	dynamic := 0
	for _, u := range a.order {
		if u.id.dynamic {
			dynamic++
		}
	}
	if dynamic < 2 || len(seen) != 2*dynamic {
		t.Fatalf("%d distinct dynamic ids for two runners of %d dynamic units each", len(seen), dynamic)
	}
	a.Stop()
	b.Stop()
	for id := range seen {
		if _, err := os.Stat(filepath.Join(uidLockDir, strconv.FormatUint(uint64(id), 10))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("uid %d still reserved after Stop: %v", id, err)
		}
	}
}

// TestGroupRefs: a supplementary group may be another unit's gid, known
// only once dynamic ids are allocated; a reference to no unit is an
// error at start, not a group silently left out.
func TestGroupRefs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("groups apply only when the runner is root")
	}
	for _, tc := range []struct{ groups, err string }{
		{`["${gid:b}"]`, ""},
		{`["${gid:nope}"]`, `no unit "nope"`},
	} {
		cfg, err := ParseConfig([]byte(`{"units": [{"name": "a", "exec": ["testsvc"], "accept": true, "user": "sluice-test-a", "dynamic_user": true, "supplementary_groups": ` + tc.groups + `},
			{"name": "b", "exec": ["testsvc"], "accept": true, "user": "sluice-test-b", "dynamic_user": true}]}`))
		if err != nil {
			t.Fatal(err)
		}
		base := openTempDir(t)
		r, err := New(Options{Config: cfg, RuntimeDir: filepath.Join(base, "run"), BinDir: binDir, StateDir: filepath.Join(base, "state"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.groups, err, tc.err)
			}
			if r != nil {
				r.Stop()
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		a, b := r.units["a"].id, r.units["b"].id
		r.Stop()
		if a.gid == b.gid || !slices.Contains(a.groups, b.gid) {
			t.Errorf("a (gid %d, groups %v) is not in b's group %d", a.gid, a.groups, b.gid)
		}
	}
}
