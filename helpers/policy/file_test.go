package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sluice/helpers/policy"
)

func TestParseGood(t *testing.T) {
	src := `# sluice policy
group ops  carol dave   # trailing comment
group devs erin erin

allow alice as alice on .host
	allow ops as root on web1
allow %ops as * on *
allow * as = on .host
deny  mallory as * on *
allow bob as root on .host command /usr/bin/systemctl status nginx
`
	p, err := policy.Parse(strings.NewReader(src), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"allow alice as alice on .host (test.policy:5)",
		"allow ops as root on web1 (test.policy:6)",
		"allow %ops as * on * (test.policy:7)",
		"allow * as = on .host (test.policy:8)",
		"deny mallory as * on * (test.policy:9)",
		"allow bob as root on .host command /usr/bin/systemctl status nginx (test.policy:10)",
	}
	var got []string
	for _, r := range p.Rules {
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(p.Groups["ops"], []string{"carol", "dave"}) || !slices.Equal(p.Groups["devs"], []string{"erin"}) {
		t.Errorf("groups %v", p.Groups)
	}
	if c := p.Rules[5].Command; !slices.Equal(c, []string{"/usr/bin/systemctl", "status", "nginx"}) {
		t.Errorf("command %q", c)
	}
	if p.Rules[0].Command != nil {
		t.Errorf("login-shell rule has command %q", p.Rules[0].Command)
	}
}

// record [input] [fail-open] comes before command and ends up in the
// rule as the spec the shell helper is sent.
func TestParseRecord(t *testing.T) {
	src := `allow alice as alice on .host record
allow bob as root on .host record input
allow carol as root on * record fail-open
allow dave as root on .host record input fail-open command /usr/bin/top -b
allow erin as erin on .host
`
	p, err := policy.Parse(strings.NewReader(src), "rec")
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		record, input, failOpen bool
		str                     string
	}{
		{true, false, false, "allow alice as alice on .host record (rec:1)"},
		{true, true, false, "allow bob as root on .host record input (rec:2)"},
		{true, false, true, "allow carol as root on * record fail-open (rec:3)"},
		{true, true, true, "allow dave as root on .host record input fail-open command /usr/bin/top -b (rec:4)"},
		{false, false, false, "allow erin as erin on .host (rec:5)"},
	} {
		r := p.Rules[i]
		if r.String() != tc.str {
			t.Errorf("rule %d = %q, want %q", i, r.String(), tc.str)
		}
		if (r.Record != nil) != tc.record || r.Record != nil && (r.Record.Input != tc.input || r.Record.FailOpen != tc.failOpen) {
			t.Errorf("rule %d record = %+v", i, r.Record)
		}
	}
	if c := p.Rules[3].Command; !slices.Equal(c, []string{"/usr/bin/top", "-b"}) {
		t.Errorf("command %q", c)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "\n\n", "# nothing allowed\n   \t\n"} {
		p, err := policy.Parse(strings.NewReader(src), "empty")
		if err != nil || len(p.Rules) != 0 {
			t.Errorf("%q: %d rules, %v", src, len(p.Rules), err)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		text      string
	}{
		{"unknown keyword", "allow alice as alice on .host\npermit alice as root on .host", 2, `unknown keyword "permit"`},
		{"capitalised keyword", "Allow alice as alice on .host", 1, "unknown keyword"},
		{"short rule", "allow alice as alice", 1, "want: allow WHO as ACCOUNT on MACHINE"},
		{"missing as", "allow alice to alice on .host", 1, "want: allow"},
		{"missing on", "allow alice as alice at .host", 1, "want: allow"},
		{"unknown option", "allow alice as alice on .host readonly-share", 1, `unknown option "readonly-share"`},
		{"record on deny", "deny alice as root on .host record", 1, "deny rules take no record"},
		{"fail-open without record", "allow alice as alice on .host fail-open", 1, `"fail-open" belongs after record`},
		{"input after fail-open", "allow alice as alice on .host record fail-open input", 1, `"input" belongs after record`},
		{"command without program", "allow alice as root on .host command", 1, "command without a program"},
		{"relative command", "allow alice as root on .host command top", 1, "not an absolute path"},
		{"deny with command", "deny alice as root on .host command /bin/sh", 1, "deny rules take no command"},
		{"bad who", "allow Alice as alice on .host", 1, `invalid sluice user "Alice"`},
		{"who with glob", "allow al* as alice on .host", 1, "invalid sluice user"},
		{"bad account", "allow alice as -root on .host", 1, `invalid unix account "-root"`},
		{"bad machine", "allow alice as alice on web/1", 1, `invalid machine "web/1"`},
		{"machine glob", "allow alice as alice on web*", 1, "invalid machine"},
		{"undefined group", "# hi\n\nallow %wheel as root on *", 3, `group "wheel" is not defined`},
		{"group used before definition", "allow %ops as root on *\ngroup ops carol", 1, `group "ops" is not defined`},
		{"group twice", "group ops a\ngroup ops b", 2, `group "ops" defined twice`},
		{"empty group", "group ops", 1, "want: group NAME MEMBER"},
		{"group member group", "group a x\ngroup b %a", 2, `invalid member "%a"`},
		{"control character", "allow alice as alice on .host\x1b[2K", 1, "control character 0x1b"},
		{"NUL", "allow alice\x00 as alice on .host", 1, "control character 0x00"},
		{"long line", "# x\n" + strings.Repeat("#", policy.MaxLine+1), 2, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse(strings.NewReader(tc.src), "/etc/sluice/policy")
			if err == nil {
				t.Fatalf("parsed into %d rules", len(p.Rules))
			}
			var pe *policy.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err %v is not a ParseError", err)
			}
			if pe.File != "/etc/sluice/policy" || pe.Line != tc.line || !strings.Contains(pe.Msg, tc.text) {
				t.Fatalf("err %q, want line %d mentioning %q", err, tc.line, tc.text)
			}
			if !strings.HasPrefix(err.Error(), "/etc/sluice/policy:"+strconv.Itoa(tc.line)+": ") {
				t.Errorf("err %q does not start with file:line", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("allow alice as alice on .host\n"), 0o644)
	if p, err := policy.Load(good); err != nil || len(p.Rules) != 1 || p.Rules[0].File != good {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := policy.Load(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
