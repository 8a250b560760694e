package fleet

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/helpers/relay"
	"sluice/msg"
)

// A user whose remote session the host's policy would detach keeps the
// stream only while the host's ptystore cannot say so: a ptystore that
// does not answer the relay's reports (here stopped; in the attack
// hung, or kept busy) must end the stream, not leave it running for
// good. The relay cuts it after relay.MissedReports unanswered periods;
// the shell stays in the host's ptystore and a reattach, which asks
// ptystore and its policy again, finds it.
func TestFleetRelayFailsClosed(t *testing.T) {
	e := newEnv(t, map[string]string{"h1": "allow alice as root on .host\n"})
	ctx := context.Background()
	g := e.SignIn(ctx, "alice")
	rep, f := openRoot(t, e, g, "h1")
	typeAndSee(t, f, "echo live-$((6*7))\n", "live-42")

	h := e.Hosts["h1"]
	pid, err := h.Suite.WaitChild("sluice-ptystore")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	cont := func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
			stopped = false
		}
	}
	defer cont()
	start := time.Now()
	got := readUntilEnd(t, f, 15*time.Second)
	t.Logf("the stream ended %v after the host's ptystore stopped answering", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(got, strings.TrimSpace(relay.UnansweredNotice)) {
		t.Errorf("the stream ended without the notice: %q", tail(got, 300))
	}
	cont()

	// The shell goes on in the host's ptystore; a reattach asks again.
	ss, err := h.Suite.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].ID != rep.Session.ID {
		t.Fatalf("h1 holds %+v (%v), want session %s kept", ss, err, rep.Session.ID)
	}
	_, f2, err := e.Open(ctx, "h1", e.HostGrant(ctx, g, "h1"), msg.OpPtyGet, msg.PtyGet{ID: rep.Session.ID})
	if err != nil {
		t.Fatalf("reattach after ptystore came back: %v", err)
	}
	defer f2.Close()
	typeAndSee(t, f2, "echo back-$((2*50))\n", "back-100")
}
