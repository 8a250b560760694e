package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"sluice/helpers/policy"
)

// BenchmarkDecide: a policy of 1000 rules, the request matching the last.
// Decisions are a linear scan; this shows what that costs per call.
func BenchmarkDecide(b *testing.B) {
	var src strings.Builder
	for i := range 999 {
		fmt.Fprintf(&src, "allow user%d as user%d on .host\n", i, i)
	}
	src.WriteString("allow alice as root on web1\n")
	p, err := policy.Parse(strings.NewReader(src.String()), "bench")
	if err != nil {
		b.Fatal(err)
	}
	req := policy.Request{User: "alice", UnixUser: "root", Machine: "web1"}
	for b.Loop() {
		if d := p.Decide(req); !d.Allow {
			b.Fatal("denied")
		}
	}
}

func BenchmarkFilterEnv(b *testing.B) {
	env := []string{"TERM=xterm-256color", "LANG=en_US.UTF-8", "LC_ALL=C", "COLUMNS=120", "LINES=40", "LD_PRELOAD=/x.so", "PATH=/tmp"}
	for b.Loop() {
		policy.FilterEnv(env)
	}
}
