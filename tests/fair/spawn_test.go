package fair

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/figures"
	"sluice/tests/suiterun"
)

// reaped waits until the runner has no child running binary name: the
// clock of an Accept=yes call runs until its instance is reaped, as the
// baseline's runs until wait returns.
func reaped(tb testing.TB, name string) {
	tb.Helper()
	deadline := time.Now().Add(suiterun.Wait)
	for {
		n := 0
		for _, p := range env.s.Children() {
			if p.Name == name {
				n++
			}
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d %s instances still running after %v", n, name, suiterun.Wait)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// BenchmarkSpawn: sequential Accept=yes calls to the real sluice-auth
// (login-begin) and sluice-policy (a create-shell-session it refuses,
// which decides without starting a shell), each batch timed until its
// last instance is reaped, against as many sequential fork+exec+wait of
// the same binary (-h: the Go runtime and the binary's init, then exit).
// Rounds alternate baseline and calls.
func BenchmarkSpawn(b *testing.B) {
	auth, err := env.s.Client(msg.Frontend, msg.ProtoWebToAuth)
	if err != nil {
		b.Fatal(err)
	}
	pol, err := env.s.Client(msg.Frontend, msg.ProtoWebToPolicy)
	if err != nil {
		b.Fatal(err)
	}
	g := signed(b, "fair")
	calls := map[string]func() error{
		"auth": func() error {
			_, err := suiterun.Call(ctx(), auth, msg.OpLoginBegin, msg.LoginBegin{}, nil, &msg.LoginBeginReply{})
			return err
		},
		"policy": func() error {
			fds, err := suiterun.Call(ctx(), pol, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "nobody", Grant: g}, nil, &msg.CreateShellSessionReply{})
			for _, f := range fds {
				f.Close()
			}
			if rpc.CodeOf(err) == msg.CodeDenied {
				return nil
			}
			if err == nil {
				return errString("policy let fair be nobody")
			}
			return err
		},
	}
	const perRound = 60
	batch := func(name string, one func() error) (per time.Duration, lat []time.Duration) {
		bin := "sluice-" + name
		reaped(b, bin)
		t0 := time.Now()
		for range perRound {
			t := time.Now()
			if err := one(); err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			lat = append(lat, time.Since(t))
		}
		reaped(b, bin)
		return time.Since(t0) / perRound, lat
	}
	forkExec := func(name string) func() error {
		exe := filepath.Join(env.s.Bin, "sluice-"+name)
		return func() error { return exec.Command(exe, "-h").Run() }
	}
	r := figures.Rounds{}
	for b.Loop() {
		for name, call := range calls {
			batch(name, call) // warm the page cache and the runner
			batch(name, forkExec(name))
		}
		for range nRounds(11) {
			for _, name := range []string{"auth", "policy"} {
				base, baseLat := batch(name, forkExec(name))
				per, lat := batch(name, calls[name])
				ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
				r.Add(name+"-forkexec-ms", ms(base))
				r.Add(name+"-call-ms", ms(per))
				r.Add(name+"-ratio", float64(per)/float64(base))
				r.Add(name+"-p50-ratio", float64(figures.Quantile(lat, .5))/float64(figures.Quantile(baseLat, .5)))
			}
		}
	}
	b.Logf("\n%s", r)
	r.Report(b)
}
