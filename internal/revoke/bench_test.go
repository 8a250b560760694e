package revoke_test

import (
	"fmt"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/revoke"
)

// BenchmarkCheckRatio: what the revocation check adds to a grant check, as
// policy and ptystore do it on every call (grant.Verify, then a stat of the
// published list and a lookup), against grant.Verify alone, measured in
// turns within one run. The list holds 1,000 disabled users and 1,000
// revoked passkeys; the grant is in neither, so every lookup runs to the end.
func BenchmarkCheckRatio(b *testing.B) {
	key := grant.NewKey()
	g, err := grant.SignCredential(key, "alice", make([]byte, 32), time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	l := revoke.List{Users: map[string]revoke.User{}, Credentials: map[string]int64{}}
	for i := range 1000 {
		l.Users[fmt.Sprintf("user%d", i)] = revoke.User{Disabled: true, NotBefore: 1}
		l.Credentials[fmt.Sprintf("%064x", i+1)] = 1
	}
	dir := b.TempDir()
	if err := revoke.Write(dir, l); err != nil {
		b.Fatal(err)
	}
	c := revoke.NewChecker(dir)
	now := time.Now()
	const batch = 1000
	var base, with time.Duration
	for b.Loop() {
		t0 := time.Now()
		for range batch {
			if err := grant.Verify(key, g, now); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for range batch {
			if err := grant.Verify(key, g, now); err != nil {
				b.Fatal(err)
			}
			if err := c.Check(g); err != nil {
				b.Fatal(err)
			}
		}
		t2 := time.Now()
		base += t1.Sub(t0)
		with += t2.Sub(t1)
	}
	n := float64(b.N * batch)
	b.ReportMetric(float64(base.Nanoseconds())/n, "verify-ns")
	b.ReportMetric(float64(with.Nanoseconds())/n, "verify+revoke-ns")
	b.ReportMetric(float64(with-base)/n, "revoke-ns")
	b.ReportMetric(float64(with)/float64(base), "ratio")
}
