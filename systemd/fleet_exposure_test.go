package systemd_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/msg"
)

// TestFleetExposure scores the gateway's fleet helper as TestExposure
// scores the helpers: at most its ceiling, and failing nothing beyond
// what sluice-policy fails and the three network checks its ssh needs
// (audit.Exempt). A unit that loses a setting must fail, so a copy
// without @resources and with PrivateUsers dropped is scored too.
func TestFleetExposure(t *testing.T) {
	need(t, "systemd-analyze")
	score := func(path string) (float64, []string, string) {
		t.Helper()
		s, table, err := audit.Exposure(context.Background(), path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var misses []string
		for _, line := range strings.Split(table, "\n") {
			if strings.HasPrefix(line, "✗") {
				misses = append(misses, strings.Fields(line)[1])
			}
		}
		return s, misses, table
	}
	abs := func(n string) string {
		p, err := filepath.Abs(n)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, base, _ := score(abs("sluice-policy@.service"))
	s, misses, table := score(abs("sluice-fleet.service"))
	if max := audit.Ceiling(msg.Fleet); s > max {
		t.Errorf("sluice-fleet.service: exposure %.1f, want <= %.1f\n%s", s, max, table)
	}
	if bad := beyond(misses, base, audit.Exempt(msg.Fleet)); len(bad) > 0 {
		t.Errorf("sluice-fleet.service fails %v, beyond sluice-policy's and its network exemptions", bad)
	}
	t.Logf("sluice-fleet.service: exposure %.1f (ceiling %.1f), not satisfied: %s", s, audit.Ceiling(msg.Fleet), strings.Join(misses, " "))

	// The check can fail: the unit as it was before this test (netlink,
	// no @resources filter) fails checks beyond the exemptions.
	loose := filepath.Join(t.TempDir(), "sluice-fleet.service")
	writeEdited(t, abs("sluice-fleet.service"), loose, map[string]string{
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n": "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
		"SystemCallFilter=~@privileged @resources\n":         "SystemCallFilter=~@privileged\n",
	})
	if _, misses, _ := score(loose); len(beyond(misses, base, audit.Exempt(msg.Fleet))) == 0 {
		t.Error("a looser fleet unit passed the exemption check")
	}
}

// writeEdited copies src to dst with each key of edits replaced by its
// value, failing if one is not there.
func writeEdited(t *testing.T, src, dst string, edits map[string]string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for from, to := range edits {
		if !strings.Contains(s, from) {
			t.Fatalf("%s: no %q to replace", src, from)
		}
		s = strings.Replace(s, from, to, 1)
	}
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
