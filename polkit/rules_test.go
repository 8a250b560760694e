package polkit_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// harness loads a rules file the way polkitd does (a polkit object with
// addRule and Result, the file run as a script), then answers every case
// read from stdin with what the rules return, in polkit's order: the
// first rule that returns something other than undefined or null wins.
const harness = `
const fs = require("fs"), vm = require("vm");
const rules = [];
const polkit = {
  Result: { NO: "no", YES: "yes", AUTH_SELF: "auth_self", AUTH_SELF_KEEP: "auth_self_keep",
            AUTH_ADMIN: "auth_admin", AUTH_ADMIN_KEEP: "auth_admin_keep", NOT_HANDLED: null },
  addRule: function (f) { rules.push(f); },
  addAdminRule: function () { throw new Error("the sluice rules must not change admin identities"); },
  log: function () {},
  spawn: function () { throw new Error("the sluice rules must not spawn"); },
};
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), { polkit: polkit }, { filename: process.argv[1] });
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const out = cases.map(function (c) {
  const action = { id: c.action, lookup: function (k) { return (c.details || {})[k]; } };
  const subject = { user: c.user, groups: c.groups, pid: 4242, seat: "", session: "", local: false, active: false,
                    isInGroup: function (g) { return c.groups.indexOf(g) >= 0; },
                    isInNetGroup: function () { return false; } };
  for (const r of rules) {
    const v = r(action, subject);
    if (v !== undefined && v !== null) return v;
  }
  return "not-handled";
});
process.stdout.write(JSON.stringify({ rules: rules.length, results: out }));
`

type tcase struct {
	Action  string            `json:"action"`
	User    string            `json:"user"`
	Groups  []string          `json:"groups"`
	Details map[string]string `json:"details,omitempty"`
}

func run(t *testing.T, rulesFile string, cases []tcase) (int, []string, error) {
	t.Helper()
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "-e", harness, rulesFile)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return 0, nil, &runErr{string(ee.Stderr)}
		}
		return 0, nil, err
	}
	var res struct {
		Rules   int      `json:"rules"`
		Results []string `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("harness output %q: %v", out, err)
	}
	return res.Rules, res.Results, nil
}

type runErr struct{ stderr string }

func (e *runErr) Error() string { return e.stderr }

func TestRule(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not installed (Debian package nodejs; scripts/deps.sh installs it): %v", err)
	}
	actions := []string{
		"org.freedesktop.machine1.shell",
		"org.freedesktop.machine1.host-shell",
		"org.freedesktop.machine1.login",
		"org.freedesktop.machine1.host-login",
		"org.freedesktop.machine1.open-pty",
		"org.freedesktop.machine1.host-open-pty",
		"org.freedesktop.machine1.manage-machines",
		"org.freedesktop.machine1.manage-images",
		"org.freedesktop.systemd1.manage-units",
		"org.freedesktop.login1.reboot",
		"org.freedesktop.machine1.shell.extra",
		"org.freedesktop.machine1.shel",
	}
	subjects := []struct {
		user   string
		groups []string
	}{
		{"sluice-shell", []string{"sluice-shell"}},
		{"someone", []string{"users", "sluice-shell"}},
		{"sluice-shell", []string{"nogroup"}}, // the name alone grants nothing
		{"sluice-policy", []string{"sluice-shell-callers", "sluice-web"}},
		{"root", []string{"root"}},
		{"alice", []string{"sluice-shell-x", "xsluice-shell", "sudo"}},
	}
	var cases []tcase
	var want []string
	for _, a := range actions {
		for _, s := range subjects {
			cases = append(cases, tcase{Action: a, User: s.user, Groups: s.groups,
				Details: map[string]string{"machine": ".host", "user": "root", "program": "/bin/sh"}})
			w := "not-handled"
			inGroup := false
			for _, g := range s.groups {
				inGroup = inGroup || g == "sluice-shell"
			}
			if inGroup && (a == "org.freedesktop.machine1.shell" || a == "org.freedesktop.machine1.host-shell") {
				w = "yes"
			}
			want = append(want, w)
		}
	}
	n, got, err := run(t, "50-sluice.rules", cases)
	if err != nil {
		t.Fatalf("evaluating 50-sluice.rules: %v", err)
	}
	if n != 1 {
		t.Errorf("%d rules registered, want 1", n)
	}
	for i := range cases {
		if got[i] != want[i] {
			t.Errorf("%s for %s %v: %q, want %q", cases[i].Action, cases[i].User, cases[i].Groups, got[i], want[i])
		}
	}
}

// TestSyntaxErrorFails makes sure the harness does not pass a file that
// polkitd would refuse to load.
func TestSyntaxErrorFails(t *testing.T) {
	src, err := os.ReadFile("50-sluice.rules")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.rules")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(src), "{", "{{", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, bad, nil); err == nil {
		t.Error("a rules file with a syntax error evaluated fine")
	}
}

// TestES5 keeps the file to what polkitd's duktape engine runs (ES5.1):
// node would accept later syntax that polkitd then rejects at load.
func TestES5(t *testing.T) {
	src, err := os.ReadFile("50-sluice.rules")
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile(`(?m)//.*$`).ReplaceAllString(string(src), "")
	for _, re := range []string{`=>`, `\blet\b`, `\bconst\b`, "`", `\bclass\b`, `\.\.\.`, `\basync\b`, `\bawait\b`} {
		if regexp.MustCompile(re).MatchString(code) {
			t.Errorf("50-sluice.rules uses %s, which polkit's ES5 engine does not have", re)
		}
	}
}
