package apparmor_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/internal/revoke"
	"sluice/msg"
)

// need is a file a helper opens under systemd because of a flag in its
// unit's ExecStart (or that flag's default when the unit leaves it out),
// with the permissions it needs there. AppArmor is off on the CI kernel,
// so nothing else notices a profile that forgets one: the helper would
// be refused at run time on a host that enforces the profiles.
type need struct {
	flag, def string
	files     func(v string) map[string]string
}

func revocationReader(dir string) map[string]string {
	return map[string]string{filepath.Join(dir, revoke.FileName): "r"}
}

var needs = map[string][]need{
	// Publishes the list: a temporary file beside it, renamed over it,
	// and the directory opened to sync it.
	msg.Auth: {{flag: "--revocation-dir", files: func(dir string) map[string]string {
		return map[string]string{
			filepath.Join(dir, revoke.FileName):      "rw",
			filepath.Join(dir, ".revocations-12345"): "rw",
			dir + "/":                                "r",
		}
	}}},
	msg.Policy: {
		{flag: "--revocation-dir", files: revocationReader},
		{flag: "--policy", def: "/etc/sluice/policy", files: func(f string) map[string]string { return map[string]string{f: "r"} }},
	},
	msg.PtyStore: {
		{flag: "--revocation-dir", files: revocationReader},
		// Watched by stat, which AppArmor mediates as read.
		{flag: "--policy-file", def: "/etc/sluice/policy", files: func(f string) map[string]string { return map[string]string{f: "r"} }},
	},
	msg.Frontend: {{flag: "--revocation-dir", files: revocationReader}},
}

// glob turns an AppArmor path pattern into a regexp (the subset the
// profiles use: *, **, [...] and {a,b}).
func glob(p string) *regexp.Regexp {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '[':
			j := strings.IndexByte(p[i:], ']')
			b.WriteString(p[i : i+j+1])
			i += j
		case c == '{':
			j := strings.IndexByte(p[i:], '}')
			alts := strings.Split(p[i+1:i+j], ",")
			for k := range alts {
				alts[k] = regexp.QuoteMeta(alts[k])
			}
			b.WriteString("(" + strings.Join(alts, "|") + ")")
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return regexp.MustCompile("^" + b.String() + "$")
}

// allows says whether p grants every permission in perms on path to a
// process that does not own the file (auth's files outlive its dynamic
// uid, so owner rules do not count).
func allows(p *audit.Profile, path, perms string) bool {
	got := ""
	for _, r := range p.Rules {
		if r.Kind == "file" && !r.Owner && glob(r.Path).MatchString(path) {
			got += r.Perms
		}
	}
	for _, c := range perms {
		if !strings.ContainsRune(got, c) {
			return false
		}
	}
	return true
}

func flagValue(argv []string, flag string) (string, bool) {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1], true
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestProfilesAllowWhatUnitsName(t *testing.T) {
	profs := profiles(t)
	for _, h := range audit.Helpers() {
		u, err := audit.ParseUnitFile(filepath.Join("../systemd", h.Service))
		if err != nil {
			t.Fatalf("%s: %v", h.Service, err)
		}
		argv, err := audit.SplitCommand(u.Value("Service", "ExecStart"))
		if err != nil {
			t.Fatalf("%s: ExecStart: %v", h.Service, err)
		}
		p, err := audit.ParseProfileFile(profs[h.Component])
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needs[h.Component] {
			v, ok := flagValue(argv, n.flag)
			if !ok {
				v = n.def
			}
			if v == "" {
				continue
			}
			for path, perms := range n.files(v) {
				if !allows(p, path, perms) {
					t.Errorf("%s: the unit's %s %s needs %q on %s; %s does not allow it", h.Component, n.flag, v, perms, path, h.Profile)
				}
			}
		}
	}
}

// The matcher must tell a covered path from one that is not, or the test
// above passes on nothing.
func TestAllows(t *testing.T) {
	p, err := audit.ParseProfile("profile x /x {\n  /a/b r,\n  /c/*.json rw,\n  owner /d/** rw,\n  /proc/[0-9]*/stat r,\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, perms string
		want        bool
	}{
		{"/a/b", "r", true}, {"/a/b", "w", false}, {"/a/bc", "r", false},
		{"/c/x.json", "rw", true}, {"/c/d/x.json", "r", false},
		{"/d/e/f", "r", false}, // owner only
		{"/proc/12/stat", "r", true}, {"/proc/self/stat", "r", false},
	} {
		if got := allows(p, tc.path, tc.perms); got != tc.want {
			t.Errorf("allows(%s, %q) = %v, want %v", tc.path, tc.perms, got, tc.want)
		}
	}
}
