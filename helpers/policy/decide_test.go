package policy_test

import (
	"strings"
	"testing"

	"sluice/helpers/policy"
)

const decidePolicy = `group ops carol dave
deny  mallory as * on *
allow alice as alice on .host
allow %ops as root on web1
allow * as = on .host
allow bob as root on .host command /usr/bin/systemctl status nginx
allow bob as root on * command /usr/bin/uptime
deny  * as root on *
allow erin as * on *
`

func TestDecide(t *testing.T) {
	p, err := policy.Parse(strings.NewReader(decidePolicy), "p")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    policy.Request
		allow  bool
		line   int // 0: no rule matched
		reason string
	}{
		{"own account", policy.Request{User: "alice", UnixUser: "alice", Machine: ".host"}, true, 3, ""},
		{"own account elsewhere", policy.Request{User: "alice", UnixUser: "alice", Machine: "web1"}, false, 0, "alice may not open a shell as alice on web1"},
		{"root not granted", policy.Request{User: "alice", UnixUser: "root", Machine: ".host"}, false, 8, "alice may not open a shell as root on .host"},
		{"group member", policy.Request{User: "dave", UnixUser: "root", Machine: "web1"}, true, 4, ""},
		{"group member other machine", policy.Request{User: "dave", UnixUser: "root", Machine: "web2"}, false, 8, ""},
		{"non member", policy.Request{User: "frank", UnixUser: "root", Machine: "web1"}, false, 8, ""},
		{"same name", policy.Request{User: "frank", UnixUser: "frank", Machine: ".host"}, true, 5, ""},
		{"same name mismatch", policy.Request{User: "frank", UnixUser: "alice", Machine: ".host"}, false, 0, ""},
		{"explicit deny wins by order", policy.Request{User: "mallory", UnixUser: "mallory", Machine: ".host"}, false, 2, "mallory may not open a shell as mallory on .host"},
		{"login shell rule does not allow a command", policy.Request{User: "alice", UnixUser: "alice", Machine: ".host", Args: []string{"/bin/sh"}}, false, 0, `alice may not run "/bin/sh" as alice on .host`},
		{"exact command", policy.Request{User: "bob", UnixUser: "root", Machine: ".host", Args: []string{"/usr/bin/systemctl", "status", "nginx"}}, true, 6, ""},
		{"command with other args", policy.Request{User: "bob", UnixUser: "root", Machine: ".host", Args: []string{"/usr/bin/systemctl", "restart", "nginx"}}, false, 8, `bob may not run "/usr/bin/systemctl" as root on .host`},
		{"command with extra arg", policy.Request{User: "bob", UnixUser: "root", Machine: ".host", Args: []string{"/usr/bin/systemctl", "status", "nginx", "-l"}}, false, 8, ""},
		{"command prefix only", policy.Request{User: "bob", UnixUser: "root", Machine: ".host", Args: []string{"/usr/bin/systemctl", "status"}}, false, 8, ""},
		{"command rule does not allow login shell", policy.Request{User: "bob", UnixUser: "root", Machine: "web3"}, false, 8, ""},
		{"command on any machine", policy.Request{User: "bob", UnixUser: "root", Machine: "web3", Args: []string{"/usr/bin/uptime"}}, true, 7, ""},
		{"wildcard account after deny root", policy.Request{User: "erin", UnixUser: "root", Machine: ".host"}, false, 8, ""},
		{"wildcard account", policy.Request{User: "erin", UnixUser: "postgres", Machine: "db1"}, true, 9, ""},
		{"unknown user", policy.Request{User: "zed", UnixUser: "nobody", Machine: ".host"}, false, 0, "zed may not open a shell as nobody on .host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(tc.req)
			line := 0
			if d.Rule != nil {
				line = d.Rule.Line
				if d.Rule.Allow != d.Allow {
					t.Errorf("decision %v from a rule with Allow %v", d.Allow, d.Rule.Allow)
				}
			}
			if d.Allow != tc.allow || line != tc.line {
				t.Fatalf("allow %v by line %d, want %v by line %d", d.Allow, line, tc.allow, tc.line)
			}
			if d.Allow && d.Reason != "" {
				t.Errorf("allow with reason %q", d.Reason)
			}
			if !d.Allow && d.Reason == "" {
				t.Error("deny without a reason")
			}
			if tc.reason != "" && d.Reason != tc.reason {
				t.Errorf("reason %q, want %q", d.Reason, tc.reason)
			}
		})
	}
}

func TestDecideEmptyPolicyDeniesAll(t *testing.T) {
	p, err := policy.Parse(strings.NewReader("# nobody\n"), "p")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []policy.Request{
		{User: "root", UnixUser: "root", Machine: ".host"},
		{User: "alice", UnixUser: "alice", Machine: ".host"},
	} {
		if d := p.Decide(r); d.Allow || d.Rule != nil {
			t.Errorf("%+v: %+v", r, d)
		}
	}
}
