package browser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/msg"
	"sluice/tests/harness"
	"sluice/tests/suiterun"
)

// The recording the player test plays: output at 0.1, 0.6, 2 and 30 s, a
// resize to 100x30 at 1.5 s, an input event (never shown) at 1 s.
const fixture = "testdata/session.cast"

// playerState is window.sluicePlayer.state().
type playerState struct {
	Pos      float64 `json:"pos"`
	Duration float64 `json:"duration"`
	Playing  bool    `json:"playing"`
	Idx      int     `json:"idx"`
	Events   int     `json:"events"`
	Settled  bool    `json:"settled"`
	Cols     int     `json:"cols"`
	Rows     int     `json:"rows"`
}

// TestPlayerInChromium: carol, an auditor by the policy, lists a
// recording in the page and plays it in xterm.js: it plays, pauses,
// seeks back and forth (the screen is what the recording showed up to
// that point, resizes included) and plays to the end. The recording comes
// through the frontend's --recordings-dir stand-in (see docs/frontend.md)
// until the recording helper's read op is connected.
func TestPlayerInChromium(t *testing.T) {
	exe := chromium(t)
	// The fixture must be what asciinema itself plays (it wants a tty).
	if out, err := exec.Command("script", "-qec", "asciinema cat "+fixture, "/dev/null").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "third") {
		t.Fatalf("asciinema cat %s: %v\n%s", fixture, err, out)
	}
	dir, err := os.MkdirTemp("", "sluice-recordings")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cast, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	// The frontend runs as a uid of its own.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fixture.cast"), cast, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startSuite(t, "allow alice as root on .host\naudit carol\n", func(c suiterun.RawConfig) {
		c.AppendExec(msg.Frontend, "--recordings-dir", dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, must := openPage(t, ctx, exe, "")
	must(p.call(ctx, "WebAuthn.enable", map[string]any{"enableUI": false}, nil))
	addAuthenticator(ctx, p, must)
	_, link, err := s.Enroll("carol")
	must(err)
	enroll(ctx, p, must, link)
	must(p.eval(ctx, `document.getElementById("signin-button").click()`, nil))
	must(p.waitFor(ctx, "the audit section", `document.body.dataset.view === "sessions" && !document.getElementById("audit").hidden`))
	must(p.waitFor(ctx, "the recording listed", `document.querySelector('#recordings tbody tr[data-id="fixture"]') !== null`))
	var row []string
	must(p.eval(ctx, `[...document.querySelector('#recordings tbody tr[data-id="fixture"]').cells].slice(0, 2).map(c => c.textContent)`, &row))
	if strings.Join(row, "|") != "root|.host" {
		t.Fatalf("recording row %q", row)
	}

	pl := player{t, ctx, p, must}
	state, screen, seek := pl.state, pl.screen, pl.seek

	// Play: it starts at once, at real speed.
	must(p.eval(ctx, `document.querySelector('#recordings tbody tr[data-id="fixture"] button').click()`, nil))
	must(p.waitFor(ctx, "the player", `document.body.dataset.view === "player" && window.sluicePlayer.state().playing`))
	if st := state(); st.Duration != 30.5 || st.Events != 6 {
		t.Fatalf("player loaded %+v, want 30.5 s and 6 events (the input event left out)", st)
	}
	must(p.waitFor(ctx, "the first output", `window.sluicePlayer.text().includes("first")`))

	// Pause: nothing more is applied and the clock stands.
	must(p.eval(ctx, `document.getElementById("player-play").click()`, nil))
	paused := state()
	if paused.Playing {
		t.Fatalf("still playing after pause: %+v", paused)
	}
	time.Sleep(2500 * time.Millisecond) // past the 2 s event, had it played on
	if st := state(); st.Playing || st.Pos != paused.Pos || st.Idx != paused.Idx || strings.Contains(screen(), "second") {
		t.Fatalf("paused at %+v, then %+v, screen %q", paused, state(), screen())
	}
	var label string
	must(p.eval(ctx, `document.getElementById("player-play").textContent`, &label))
	if label != "Play" {
		t.Errorf("button says %q while paused", label)
	}

	// Seek forward: the screen as it was at 25 s, resized to 100x30.
	seek("25")
	text := screen()
	if st := state(); st.Cols != 100 || st.Rows != 30 || st.Pos != 25 || st.Playing {
		t.Errorf("after seeking to 25 s: %+v", st)
	}
	if !strings.Contains(text, "first") || !strings.Contains(text, "second bold") || strings.Contains(text, "third") {
		t.Fatalf("screen at 25 s: %q", text)
	}
	// Seek back: reset and replayed to 0.2 s; the resize is undone too.
	seek("0.2")
	text = screen()
	if st := state(); st.Cols != 80 || st.Rows != 24 || strings.TrimSpace(text) != "$" {
		t.Fatalf("at 0.2 s: %+v, screen %q", st, text)
	}
	// Faster, to the end: it plays the rest and stops there.
	must(p.eval(ctx, `(() => { const s = document.getElementById("player-speed"); s.value = "16"; s.dispatchEvent(new Event("change")); })()`, nil))
	seek("25")
	must(p.eval(ctx, `document.getElementById("player-play").click()`, nil))
	must(p.waitFor(ctx, "the end", `!window.sluicePlayer.state().playing && window.sluicePlayer.state().settled && window.sluicePlayer.text().includes("third")`))
	if st := state(); st.Pos != st.Duration || st.Idx != st.Events {
		t.Fatalf("at the end: %+v", st)
	}
	lines := strings.Split(strings.TrimRight(screen(), "\n "), "\n")
	want := []string{"$ echo first", "first", "$ echo second", "second bold", "$ echo third", "third", "$ exit"}
	var got []string
	for _, l := range lines {
		if l = strings.TrimRight(l, " "); l != "" {
			got = append(got, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("screen at the end:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	shot := filepath.Join(harness.RepoRoot(), "tests", "artifacts", "browser-player.png")
	must(os.MkdirAll(filepath.Dir(shot), 0o755))
	must(p.screenshot(ctx, shot))
}
