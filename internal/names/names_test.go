package names_test

import (
	"strings"
	"testing"

	"sluice/internal/names"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		unix, machine, sluiceUser bool
	}{
		{"alice", true, true, true},
		{"_svc", true, true, true},
		{"a.b-c_1", true, true, true},
		{"Alice", true, true, false},
		{"1abc", true, true, false},
		{"host$", true, false, false},
		{".host", false, true, false},
		{"web1.example.org", true, true, true},
		{"", false, false, false},
		{"-root", false, false, false},
		{"a..b", true, false, true},
		{"a.", true, false, true},
		{"a/b", false, false, false},
		{"a:b", false, false, false},
		{"a b", false, false, false},
		{"a$b", false, false, false},
		{"$", false, false, false},
		{"é", false, false, false},
		{"a\x00", false, false, false},
		{strings.Repeat("a", 32), true, true, true},
		{strings.Repeat("a", 33), true, true, false},
		{strings.Repeat("a", 65), false, false, false},
	} {
		if got := names.UnixUser(tc.name); got != tc.unix {
			t.Errorf("UnixUser(%q) = %v", tc.name, got)
		}
		if got := names.Machine(tc.name); got != tc.machine {
			t.Errorf("Machine(%q) = %v", tc.name, got)
		}
		if got := names.SluiceUser(tc.name); got != tc.sluiceUser {
			t.Errorf("SluiceUser(%q) = %v", tc.name, got)
		}
	}
}

// TestCheckSluiceUser: the names auth refuses at enrollment, each with a
// reason (this was auth's ValidUserName, the same rule as SluiceUser).
func TestCheckSluiceUser(t *testing.T) {
	for _, ok := range []string{"a", "_", "alice", "a.b-c_d9", strings.Repeat("z", names.MaxSluiceUser)} {
		if err := names.CheckSluiceUser(ok); err != nil || !names.SluiceUser(ok) {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "é", "a b", "a:b", "a\n", ".a", "9", strings.Repeat("z", names.MaxSluiceUser+1)} {
		if err := names.CheckSluiceUser(bad); err == nil || names.SluiceUser(bad) {
			t.Errorf("%q accepted", bad)
		} else if !strings.Contains(err.Error(), "user name") {
			t.Errorf("%q: error %q does not say what was wrong", bad, err)
		}
	}
}
