package systemd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/internal/installtest"
	"sluice/msg"
	"sluice/suite"
)

func TestMain(m *testing.M) {
	code := m.Run()
	installtest.Cleanup()
	os.Exit(code)
}

// What each socket admits at the file-permission layer.
var socketGroup = map[string]string{
	msg.Auth:     "sluice-web",
	msg.Policy:   "sluice-policy-callers",
	msg.Shell:    "sluice-shell-callers",
	msg.PtyStore: "sluice-ptystore-callers",
	msg.Hangup:   "sluice-hangup-callers",
	msg.Record:   "sluice-record-callers",
}

// callerGroup is the group a helper's --allow names for a protocol whose
// socket admits more than that protocol's client: the socket's group lets
// all of them connect, this group tells the one client apart.
var callerGroup = map[string]string{
	msg.ProtoWebToPolicy:      "sluice-web",
	msg.ProtoPtyStoreToPolicy: "sluice-session-checkers",
	msg.ProtoWebToPtyStore:    "sluice-web",
	msg.ProtoPolicyToPtyStore: "sluice-session-putters",
	msg.ProtoRecordToPolicy:   "sluice-audit-checkers",
	msg.ProtoWebToRecord:      "sluice-web",
	msg.ProtoShellToRecord:    "sluice-shell",
	msg.ProtoPtyStoreToHangup: "sluice-session-enders",
	msg.ProtoRecordToHangup:   "sluice-recorders",
}

// allowGroup is the group p's --allow must name.
func allowGroup(p msg.Protocol) string {
	if g, ok := callerGroup[p.Name]; ok {
		return g
	}
	return socketGroup[p.Server]
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			// These come from Debian packages that scripts/deps.sh installs
			// (make test runs it), so their absence is a broken setup.
			t.Fatalf("%s not installed (scripts/deps.sh installs it): %v", tool, err)
		}
	}
}

func unitFiles(t *testing.T, dir string) []string {
	t.Helper()
	var units []string
	for _, pat := range []string{"*.socket", "*.service", "*.target"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		units = append(units, m...)
	}
	sort.Strings(units)
	if len(units) < 11 {
		t.Fatalf("only %d unit files in %s", len(units), dir)
	}
	return units
}

// verify runs systemd-analyze verify on each unit inside a private mount
// namespace in which the installed DESTDIR's libexec/sluice is mounted at
// /usr/libexec/sluice: verify insists that ExecStart= binaries exist at
// their real paths, and --root= does not help (it then misses the system's
// own units). Returns the output per unit.
func verify(t *testing.T, libexec string, units []string) map[string]string {
	t.Helper()
	script := `set -e
if [ -d /usr/libexec/sluice ]; then
	mount --bind "$1" /usr/libexec/sluice
else
	mount -t tmpfs -o mode=0755 tmpfs /usr/libexec
	mkdir /usr/libexec/sluice
	mount --bind "$1" /usr/libexec/sluice
fi
shift
set +e
for u; do
	echo "=== $u"
	SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$u" 2>&1
	echo "=== rc $?"
done`
	args := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", libexec}, units...)
	out, err := exec.Command("unshare", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("unshare: %v\n%s", err, out)
	}
	res := map[string]string{}
	var cur string
	var body strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "=== rc "):
			rc := strings.TrimPrefix(line, "=== rc ")
			text := body.String()
			if rc != "0" {
				text += "(exit status " + rc + ")\n"
			}
			res[cur] = text
			body.Reset()
		case strings.HasPrefix(line, "=== "):
			cur = strings.TrimPrefix(line, "=== ")
		case cur != "":
			body.WriteString(line + "\n")
		}
	}
	return res
}

// TestVerify runs systemd-analyze verify on every installed unit and wants
// no output at all: unknown keys and bad values are only warnings, with a
// zero exit status, so the text is what is checked.
func TestVerify(t *testing.T) {
	need(t, "systemd-analyze", "unshare")
	dest := installtest.Install(t, "/usr")
	l := audit.LayoutFor(dest, "/usr")
	units := unitFiles(t, l.UnitDir)

	// The check must be able to fail: a unit with a misspelt key.
	bad := filepath.Join(t.TempDir(), "sluice-auth.socket")
	b, err := os.ReadFile(filepath.Join(l.UnitDir, "sluice-auth.socket"))
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), "PassCredentials=yes", "PassCredential=yes", 1))
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}

	res := verify(t, l.LibexecDir, append(units, bad))
	if out, ok := res[bad]; !ok || strings.TrimSpace(out) == "" {
		t.Errorf("verify said nothing about a misspelt key: %q", out)
	}
	for _, u := range units {
		out, ok := res[u]
		if !ok {
			t.Errorf("%s: not verified", filepath.Base(u))
			continue
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify %s:\n%s", filepath.Base(u), out)
		}
	}
}

// TestExposure scores every service with systemd-analyze security
// --offline=true and prints the table. A helper with a higher ceiling
// (audit.Exempt) may fail only the checks it is exempt from beyond what
// the policy helper, the plain case, fails: a raised ceiling is not room
// for anything else.
func TestExposure(t *testing.T) {
	need(t, "systemd-analyze")
	var rows []string
	missed := map[string][]string{}
	for _, h := range audit.Helpers() {
		path, err := filepath.Abs(h.Service)
		if err != nil {
			t.Fatal(err)
		}
		score, table, err := audit.Exposure(context.Background(), path)
		if err != nil {
			t.Errorf("%s: %v", h.Service, err)
			continue
		}
		max := audit.Ceiling(h.Component)
		verdict := "ok"
		if score > max {
			verdict = "TOO HIGH"
			t.Errorf("%s: exposure %.1f, want <= %.1f\n%s", h.Service, score, max, table)
		}
		var misses []string
		for _, line := range strings.Split(table, "\n") {
			if strings.HasPrefix(line, "✗") {
				misses = append(misses, strings.Fields(line)[1])
			}
		}
		missed[h.Component] = misses
		rows = append(rows, fmt.Sprintf("%-26s %4.1f  <= %.1f  %-8s %s", h.Service, score, max, verdict, strings.Join(misses, " ")))
	}
	for _, h := range audit.Helpers() {
		if h.Component == msg.Frontend || missed[h.Component] == nil {
			continue
		}
		if bad := beyond(missed[h.Component], missed[msg.Policy], audit.Exempt(h.Component)); len(bad) > 0 {
			t.Errorf("%s fails %v, beyond what sluice-policy fails and what it is exempt from", h.Service, bad)
		}
	}
	t.Logf("systemd-analyze security --offline=true\n%-26s %4s  %7s  %-8s %s\n%s", "UNIT", "EXP", "CEILING", "", "NOT SATISFIED",
		strings.Join(rows, "\n"))
}

// beyond is every check in misses that is neither in base nor in exempt.
func beyond(misses, base, exempt []string) []string {
	var out []string
	for _, m := range misses {
		if !slices.Contains(base, m) && !slices.Contains(exempt, m) {
			out = append(out, m)
		}
	}
	return out
}

func parse(t *testing.T, name string) *audit.Unit {
	t.Helper()
	u, err := audit.ParseUnitFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestCallers checks that the two layers of caller control agree: the
// socket file's group admits exactly the units that speak a protocol to
// that helper, and each helper's own --allow lists name nothing the socket
// would not let through anyway (plus root for admin protocols).
func TestCallers(t *testing.T) {
	groupsOf := map[string][]string{} // component -> supplementary groups
	allows := map[string]map[string]string{}
	for _, h := range audit.Helpers() {
		sock := parse(t, h.Socket)
		svc := parse(t, h.Service)
		argv, err := audit.SplitCommand(svc.Value("Service", "ExecStart"))
		if err != nil {
			t.Fatalf("%s: %v", h.Service, err)
		}
		if want := "/usr/libexec/sluice/" + h.Binary; argv[0] != want {
			t.Errorf("%s: ExecStart runs %s, want %s", h.Service, argv[0], want)
		}
		// The helper's own confinement needs these through systemd's filter.
		allowed := strings.Join(svc.Values("Service", "SystemCallFilter"), " ")
		for _, call := range []string{"seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"} {
			if !slices.Contains(strings.Fields(allowed), call) {
				t.Errorf("%s: SystemCallFilter= lacks %s, which internal/confine needs", h.Service, call)
			}
		}
		if svc.Value("Service", "DynamicUser") != "yes" {
			t.Errorf("%s: DynamicUser=%q", h.Service, svc.Value("Service", "DynamicUser"))
		}
		for _, g := range svc.Values("Service", "SupplementaryGroups") {
			groupsOf[h.Component] = append(groupsOf[h.Component], strings.Fields(g)...)
		}
		// A static primary group counts as the kernel reports it too
		// (the shell helper's sluice-shell, which "shell to record" names).
		if g := svc.Value("Service", "Group"); g != "" {
			groupsOf[h.Component] = append(groupsOf[h.Component], g)
		}
		allows[h.Component] = audit.Allows(argv)

		if h.Component == msg.Frontend {
			if sock.Value("Socket", "ListenStream") == "" || sock.Value("Socket", "Accept") == "yes" {
				t.Errorf("%s: want one ListenStream with Accept=no", h.Socket)
			}
			if svc.Value("Service", "Type") != "notify" {
				t.Errorf("%s: Type=%q, want notify", h.Service, svc.Value("Service", "Type"))
			}
			continue
		}
		checks := map[string]string{
			"ListenStream":    suite.DefaultRuntimeDir + "/" + h.Component + ".sock",
			"PassCredentials": "yes",
			"SocketUser":      "root",
			"SocketGroup":     socketGroup[h.Component],
			"SocketMode":      "0660",
			"Accept":          map[bool]string{true: "no", false: "yes"}[h.Component == msg.PtyStore],
		}
		for k, want := range checks {
			if got := sock.Value("Socket", k); got != want {
				t.Errorf("%s: %s=%q, want %q", h.Socket, k, got, want)
			}
		}
		if h.Component == msg.PtyStore {
			for k, want := range map[string]string{"NotifyAccess": "main", "Type": "notify"} {
				if got := svc.Value("Service", k); got != want {
					t.Errorf("%s: %s=%q, want %q", h.Service, k, got, want)
				}
			}
			if svc.Value("Service", "FileDescriptorStoreMax") == "" {
				t.Errorf("%s: no FileDescriptorStoreMax=", h.Service)
			}
		}
	}

	for _, p := range msg.Protocols {
		spec, ok := allows[p.Server][p.Name]
		if !ok {
			t.Errorf("sluice-%s: no --allow for %q", p.Server, p.Name)
			continue
		}
		group := allowGroup(p)
		for _, item := range strings.Split(spec, ",") {
			kind, val, _ := strings.Cut(item, ":")
			switch {
			case p.Client == msg.Admin && item == "uid:0":
			case p.Client != msg.Admin && kind == "group" && val == group:
			default:
				t.Errorf("sluice-%s: %q allows %q; want group %s (and root for admin protocols)", p.Server, p.Name, item, group)
			}
		}
		if p.Client == msg.Admin {
			continue
		}
		// The client unit carries the socket's group and the protocol's,
		// and no unit that does not speak to this helper does.
		for _, g := range []string{socketGroup[p.Server], group} {
			if !slices.Contains(groupsOf[p.Client], g) {
				t.Errorf("sluice-%s speaks %q but is not in %s", p.Client, p.Name, g)
			}
		}
		// No other client unit holds the protocol's group.
		for comp, groups := range groupsOf {
			if comp != p.Client && slices.Contains(groups, group) && !speaksTo(comp, p.Server, group) {
				t.Errorf("sluice-%s is in %s, which lets it speak %q", comp, group, p.Name)
			}
		}
	}
	// Groups that carry a right to a directory rather than a socket, and
	// the one component that may hold each.
	dirGroups := map[string]string{"sluice-revocation": msg.Auth}
	for comp, groups := range groupsOf {
		for _, g := range groups {
			if owner, ok := dirGroups[g]; ok {
				if comp != owner {
					t.Errorf("sluice-%s is in %s, which only sluice-%s may be in", comp, g, owner)
				}
				continue
			}
			speaks := false
			for _, p := range msg.Protocols {
				if p.Client == comp && (socketGroup[p.Server] == g || allowGroup(p) == g) {
					speaks = true
				}
			}
			if !speaks {
				t.Errorf("sluice-%s is in %s but calls no helper behind it", comp, g)
			}
		}
	}
}

// TestSysusers creates the accounts with the real systemd-sysusers in a
// scratch root and checks that every group the units name exists.
func TestSysusers(t *testing.T) {
	need(t, "systemd-sysusers")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := filepath.Abs("sluice.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-sysusers", "--root="+root, conf).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "Creating ") {
			t.Errorf("systemd-sysusers said: %s", line)
		}
	}
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	names := func(b []byte) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			if n, _, ok := strings.Cut(l, ":"); ok {
				m[n] = true
			}
		}
		return m
	}
	groups, users := names(group), names(passwd)
	want := []string{"sluice-shell"} // polkit's group
	for _, g := range socketGroup {
		want = append(want, g)
	}
	for _, h := range audit.Helpers() {
		svc := parse(t, h.Service)
		for _, g := range svc.Values("Service", "SupplementaryGroups") {
			want = append(want, strings.Fields(g)...)
		}
	}
	for _, g := range want {
		if !groups[g] {
			t.Errorf("group %s is used but sluice.sysusers does not create it", g)
		}
	}
	if !users["sluice-shell"] {
		t.Error("sluice.sysusers creates no sluice-shell user")
	}

	tmpfiles, err := filepath.Abs("sluice.tmpfiles")
	if err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("systemd-tmpfiles", "--root="+root, "--create", tmpfiles).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("systemd-tmpfiles --create: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(root, "run/sluice")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("tmpfiles did not create run/sluice 0755: %v", err)
	}
}

// speaksTo reports whether comp is the client of a protocol to server
// whose --allow names group.
func speaksTo(comp, server, group string) bool {
	for _, p := range msg.Protocols {
		if p.Client == comp && p.Server == server && allowGroup(p) == group {
			return true
		}
	}
	return false
}
