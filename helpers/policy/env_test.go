package policy_test

import (
	"slices"
	"strings"
	"testing"

	"sluice/helpers/policy"
)

func TestFilterEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string
		want    []string
		dropped int
	}{
		{"nothing", nil, nil, 0},
		{"terminal", []string{"TERM=xterm-256color", "LANG=en_US.UTF-8", "LC_ALL=C", "LC_CTYPE=de_DE@euro", "COLUMNS=120", "LINES=40"},
			[]string{"TERM=xterm-256color", "LANG=en_US.UTF-8", "LC_ALL=C", "LC_CTYPE=de_DE@euro", "COLUMNS=120", "LINES=40"}, 0},
		{"dangerous names", []string{"LD_PRELOAD=/tmp/x.so", "PATH=/tmp", "BASH_ENV=/tmp/x", "ENV=/tmp/x", "HOME=/root", "SHELL=/bin/sh", "TERM=vt100"},
			[]string{"TERM=vt100"}, 6},
		{"no equals", []string{"TERM", "LANG=C"}, []string{"LANG=C"}, 1},
		{"empty values", []string{"TERM=", "LANG=", "COLUMNS="}, nil, 3},
		{"lower-case names", []string{"term=xterm", "lang=C", "lc_all=C"}, nil, 3},
		{"LC_ alone or odd", []string{"LC_=C", "LC_all=C", "LC_1=C", "LC_ALL_X=C"}, []string{"LC_ALL_X=C"}, 3},
		{"shell syntax in values", []string{"TERM=$(reboot)", "LANG=C;id", "LC_ALL=a b", "TERM=../../x"}, nil, 4},
		{"path-like value", []string{"LANG=/etc/passwd", "TERM=x/y"}, nil, 2},
		{"control chars", []string{"TERM=xterm\n", "LANG=C\x00"}, nil, 2},
		{"long value", []string{"TERM=" + strings.Repeat("x", 65), "TERM=" + strings.Repeat("x", 64)}, []string{"TERM=" + strings.Repeat("x", 64)}, 1},
		{"dimensions", []string{"COLUMNS=0", "COLUMNS=080", "COLUMNS=10000", "COLUMNS=-1", "COLUMNS=1e3", "LINES=9999", "COLUMNS=1"},
			[]string{"LINES=9999", "COLUMNS=1"}, 5},
		{"first wins", []string{"TERM=xterm", "TERM=dumb", "LANG=C", "LANG=C.UTF-8"}, []string{"TERM=xterm", "LANG=C"}, 2},
		{"bad first does not block a good second", []string{"TERM=a b", "TERM=xterm"}, []string{"TERM=xterm"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, dropped := policy.FilterEnv(tc.in)
			if !slices.Equal(got, tc.want) || dropped != tc.dropped {
				t.Fatalf("FilterEnv(%q) = %q, %d dropped; want %q, %d", tc.in, got, dropped, tc.want, tc.dropped)
			}
		})
	}
}

func TestFilterEnvCap(t *testing.T) {
	var in []string
	for c := 'A'; c <= 'Z'; c++ {
		in = append(in, "LC_"+string(c)+"=C")
	}
	got, dropped := policy.FilterEnv(in)
	if len(got) != policy.MaxEnv || dropped != len(in)-policy.MaxEnv {
		t.Fatalf("%d kept, %d dropped", len(got), dropped)
	}
}
