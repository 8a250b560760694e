package fleet

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/helpers/relay"
	"sluice/msg"
	"sluice/tests/suiterun"
)

// readUntilEnd reads a gateway pty until it ends (EIO once ssh is gone)
// and returns what it read; it fails the test if the stream still runs
// after d.
func readUntilEnd(t *testing.T, f *os.File, d time.Duration) string {
	t.Helper()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	f.SetReadDeadline(time.Now().Add(d))
	defer f.SetReadDeadline(time.Time{})
	for {
		n, err := f.Read(buf)
		got.Write(buf[:n])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the remote stream still runs %v later; got %q", d, tail(got.String(), 400))
		}
		if err != nil {
			return got.String()
		}
	}
}

// A host's policy takes a live remote session away as it does a local
// one: under "on-revoke detach" the stream through the relay and the
// gateway is cut (the relay reports the session as the frontend does
// and reads ptystore's detach mark), the shell keeps running on the host
// and every reattach is refused; under "on-revoke end" the session ends
// on the host.
func TestFleetPolicyRevokesRemoteSessions(t *testing.T) {
	const keep = "allow bob as root on .host\n"
	e := newEnv(t, map[string]string{
		"h1": "on-revoke detach\nallow alice as root on .host\n" + keep,
		"h2": "on-revoke end\nallow alice as root on .host\n" + keep,
	})
	ctx := context.Background()
	g := e.SignIn(ctx, "alice")
	ids := map[string]string{}
	ptys := map[string]*os.File{}
	for _, n := range []string{"h1", "h2"} {
		rep, f := openRoot(t, e, g, n)
		typeAndSee(t, f, "echo live-$((3*4))-"+n+"\n", "live-12-"+n)
		ids[n], ptys[n] = rep.Session.ID, f
	}

	// Each host's admin takes alice's rule away and applies the file
	// (sluicectl policy apply: rename over the file, then pty-recheck).
	revoke := func(n, pol string) time.Time {
		h := e.Hosts[n]
		tmp := h.Suite.PolicyPath + ".new"
		if err := os.WriteFile(tmp, []byte(pol), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, h.Suite.PolicyPath); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cl, err := h.Suite.Client(msg.Admin, msg.ProtoAdminToPtyStore)
		if err != nil {
			t.Fatal(err)
		}
		var rr msg.PtyRecheckReply
		if _, err := suiterun.Call(ctx, cl, msg.OpPtyRecheck, msg.PtyRecheck{}, nil, &rr); err != nil {
			t.Fatalf("%s: recheck: %v", n, err)
		}
		if len(rr.Revoked) != 1 || rr.Revoked[0].Session.ID != ids[n] {
			t.Fatalf("%s: recheck revoked %+v, want %s", n, rr.Revoked, ids[n])
		}
		return start
	}

	t.Run("on-revoke detach: the stream is cut, the shell kept, reattach refused", func(t *testing.T) {
		start := revoke("h1", "on-revoke detach\n"+keep)
		// The relay reports every 500 ms: well within 5 s, even on a
		// loaded machine; the local bound is the same report.
		out := readUntilEnd(t, ptys["h1"], 5*time.Second)
		t.Logf("h1: stream cut %v after the recheck began", time.Since(start))
		if !strings.Contains(out, strings.TrimSpace(relay.DetachedNotice)) {
			t.Fatalf("h1: stream ended without the detach notice: %q", tail(out, 400))
		}
		ss, err := e.Hosts["h1"].Suite.Sessions(ctx)
		if err != nil || len(ss) != 1 || ss[0].ID != ids["h1"] {
			t.Fatalf("h1 holds %+v (%v): the shell should be kept", ss, err)
		}
		_, _, err = e.Open(ctx, "h1", e.HostGrant(ctx, g, "h1"), msg.OpPtyGet, msg.PtyGet{ID: ids["h1"]})
		if code(err) != msg.CodeDenied {
			t.Fatalf("h1: reattach after the detach: %v, want denied", err)
		}
	})

	t.Run("on-revoke end: the session ends on the host", func(t *testing.T) {
		revoke("h2", "on-revoke end\n"+keep)
		readUntilEnd(t, ptys["h2"], 10*time.Second)
		if ss, err := e.Hosts["h2"].Suite.Sessions(ctx); err != nil || len(ss) != 0 {
			t.Fatalf("h2 holds %+v (%v), want none", ss, err)
		}
		_, _, err := e.Open(ctx, "h2", e.HostGrant(ctx, g, "h2"), msg.OpPtyGet, msg.PtyGet{ID: ids["h2"]})
		if code(err) != msg.CodeNotFound && code(err) != msg.CodeDenied {
			t.Fatalf("h2: reattach after the end: %v, want not-found or denied", err)
		}
	})
}
