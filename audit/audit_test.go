package audit

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{`/usr/libexec/sluice/sluice-auth --allow "web to auth=group:sluice-web" --allow 'admin to auth=uid:0'`,
			[]string{"/usr/libexec/sluice/sluice-auth", "--allow", "web to auth=group:sluice-web", "--allow", "admin to auth=uid:0"}, false},
		{`-/bin/x a\ b "c\"d"`, []string{"/bin/x", "a b", `c"d`}, false},
		{`/bin/x "unterminated`, nil, true},
		{``, nil, true},
		{`/bin/a ; /bin/b ;`, nil, true},
	} {
		got, err := SplitCommand(tc.in)
		if (err != nil) != tc.err || (!tc.err && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	got := Allows([]string{"x", "--allow", "a b=uid:0", "--allow=c=group:g", "-allow", "d=gid:5", "--other", "--allow"})
	want := map[string]string{"a b": "uid:0", "c": "group:g", "d": "gid:5"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Allows: %v, want %v", got, want)
	}
}

func TestParseUnit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.service")
	os.WriteFile(path, []byte("# c\n[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/a \\\n  --b\nSupplementaryGroups=a\nSupplementaryGroups=\nSupplementaryGroups=b c\n; c\n"), 0o644)
	u, err := ParseUnitFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if v := u.Value("Service", "ExecStart"); strings.Join(strings.Fields(v), " ") != "/bin/a --b" {
		t.Errorf("continuation: %q", v)
	}
	if v := u.Values("Service", "SupplementaryGroups"); !reflect.DeepEqual(v, []string{"b c"}) {
		t.Errorf("an empty assignment resets: %q", v)
	}
	for _, bad := range []string{"Key=outside\n", "[Unit\n", "[Unit]\nnot an assignment\n"} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, err := ParseUnitFile(path); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseProfile(t *testing.T) {
	good := "abi <abi/3.0>,\ninclude <tunables/global>\n#include <x>\nprofile p /usr/bin/p flags=(enforce) {\n  /a r,\n  owner /b/** rwk,\n  dbus send\n    bus=system,\n  network unix stream,\n}\n"
	p, err := ParseProfile(good)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "p" || p.Attach != "/usr/bin/p" || len(p.Rules) != 4 || !reflect.DeepEqual(p.Includes, []string{"tunables/global", "x"}) {
		t.Errorf("parsed %+v", p)
	}
	if r := p.Rules[1]; !r.Owner || r.Path != "/b/**" || r.Perms != "rwk" {
		t.Errorf("owner rule %+v", r)
	}
	if r := p.Rules[2]; r.Kind != "dbus" || r.Text != "dbus send bus=system" {
		t.Errorf("multi-line rule %+v", r)
	}
	for _, bad := range []string{
		"profile p /p {\n  /a r,\n",                          // unbalanced
		"profile p /p {\n  include <abstractions/base>\n}\n", // include inside
		"profile p /p {\n  deny /a r,\n}\n",                  // deny
		"profile p /p {\n  /a r -> q,\n}\n",                  // transition
		"profile p /p {\n  frobnicate,\n}\n",                 // unknown
		"profile p /p {\n  ^hat {\n  }\n}\n",                 // hat
		"profile p {\n}\n",                                   // no attachment
		"/a r,\n",                                            // rule outside
	} {
		if _, err := ParseProfile(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if s := p.Summary(); !strings.Contains(s, "4 rules") || !strings.Contains(s, "/b/** rwk") {
		t.Errorf("summary %q", s)
	}
}
