package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/tests/harness"
)

// TestRecordedSessionPlayedInChromium: alice's session is recorded (the
// policy says so) while she types in the page and the window shrinks;
// then carol, an auditor, lists that recording in her page, plays it in
// the player's xterm.js and seeks in it. What the player shows is what
// alice's terminal showed: the distinctive output, the size her page
// resized to (an r event), and nothing of it before it happened.
func TestRecordedSessionPlayedInChromium(t *testing.T) {
	exe := chromium(t)
	s := startSuite(t, "allow alice as root on .host record\naudit carol\n", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// signIn opens a browser of its own (its own cookies and passkey)
	// and signs user in.
	signIn := func(user string) (*page, func(error)) {
		t.Helper()
		p, must := openPage(t, ctx, exe, user)
		must(p.call(ctx, "WebAuthn.enable", map[string]any{"enableUI": false}, nil))
		addAuthenticator(ctx, p, must)
		_, link, err := s.Enroll(user)
		must(err)
		enroll(ctx, p, must, link)
		must(p.eval(ctx, `document.getElementById("signin-button").click()`, nil))
		must(p.waitFor(ctx, "the sessions page", `document.body.dataset.view === "sessions"`))
		return p, must
	}
	// rows is the text of xterm's rows in the page's terminal.
	const rows = `[...document.querySelectorAll("#terminal .xterm-rows > div")].map(r => r.textContent.trimEnd()).join("\n")`

	// Alice's recorded session.
	p, must := signIn("alice")
	must(p.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": false}, nil))
	must(p.waitFor(ctx, "the policy's targets", `document.querySelector("#targets button") !== null`))
	must(p.eval(ctx, `document.querySelector("#targets button").click()`, nil))
	must(p.waitFor(ctx, "the terminal", `document.body.dataset.view === "term" && `+rows+`.includes("#")`))
	must(p.eval(ctx, `document.querySelector(".xterm-helper-textarea").focus()`, nil))
	n := 1000 + os.Getpid()%9000
	marker := fmt.Sprintf("recorded-%d", n*3)
	must(p.typeText(ctx, fmt.Sprintf("echo recorded-$((%d*3))", n), true))
	must(p.waitFor(ctx, "the marker", rows+`.split("\n").some(l => l === "`+marker+`")`))
	// A smaller window: xterm.js fits fewer columns and rows, the page
	// sends the new size, the recorder records it.
	must(p.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 700, "height": 450, "deviceScaleFactor": 1, "mobile": false}, nil))
	// xterm.js may fit in a few steps: ask the shell its size until it
	// says the same twice.
	var m []string
	sizeRe := regexp.MustCompile(`(?m)^size-(\d+)x(\d+)-(\d+)$`)
	for i, last := 0, ""; ; i++ {
		must(p.typeText(ctx, fmt.Sprintf("echo size-$(stty size | tr ' ' x)-%d", i), true))
		must(p.waitFor(ctx, "the size", fmt.Sprintf("/^size-\\d+x\\d+-%d$/m.test(%s)", i, rows)))
		var shown string
		must(p.eval(ctx, rows, &shown))
		all := sizeRe.FindAllStringSubmatch(shown, -1)
		m = all[len(all)-1]
		if m[1]+"x"+m[2] == last {
			break
		}
		if i == 10 {
			t.Fatalf("the terminal's size never settled: %q", shown)
		}
		last = m[1] + "x" + m[2]
		time.Sleep(200 * time.Millisecond)
	}
	wantRows, _ := strconv.Atoi(m[1])
	wantCols, _ := strconv.Atoi(m[2])
	if wantCols >= 80 && wantRows >= 24 || wantCols < 20 {
		t.Fatalf("the terminal did not shrink: %dx%d", wantCols, wantRows)
	}
	must(p.typeText(ctx, "exit", true))
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	err := p.waitFor(wctx, "the session's end", rows+`.includes("[session ended]")`)
	wcancel()
	if err != nil {
		var shown string
		p.eval(ctx, rows, &shown)
		t.Fatalf("%v; the terminal shows:\n%s", err, shown)
	}

	// Carol plays it.
	p, must = signIn("carol")
	must(p.waitFor(ctx, "the recording listed", `document.querySelector('#recordings tbody tr') !== null`))
	var row []string
	must(p.eval(ctx, `[...document.querySelector('#recordings tbody tr').cells].slice(0, 2).map(c => c.textContent)`, &row))
	if strings.Join(row, "|") != "root|.host" {
		t.Fatalf("recording row %q", row)
	}
	pl := player{t, ctx, p, must}
	must(p.eval(ctx, `document.querySelector('#recordings tbody tr button').click()`, nil))
	must(p.waitFor(ctx, "the player", `document.body.dataset.view === "player"`))
	// At real speed the marker appears when it did in alice's session.
	must(p.waitFor(ctx, "the marker played", `window.sluicePlayer.text().split("\n").some(l => l.trimEnd() === "`+marker+`")`))
	st := pl.state()
	if st.Duration <= 0 || st.Events < 4 {
		t.Fatalf("player loaded %+v", st)
	}
	// The start: the prompt at most, no marker yet, the first size.
	must(p.eval(ctx, `document.getElementById("player-play").click()`, nil))
	pl.seek("0")
	if text := pl.screen(); strings.Contains(text, marker) {
		t.Fatalf("the marker is on the screen at 0 s: %q", text)
	}
	// The end: everything, at the size alice's page resized to.
	pl.seek(fmt.Sprintf("%g", st.Duration))
	text := pl.screen()
	if !strings.Contains(text, marker) || !strings.Contains(text, m[0]) {
		t.Fatalf("screen at the end lacks %q or %q:\n%s", marker, m[0], text)
	}
	if end := pl.state(); end.Cols != wantCols || end.Rows != wantRows {
		var dbg string
		p.eval(ctx, `JSON.stringify([window.sluicePlayer.cast.header, window.sluicePlayer.cast.events.filter(e => e[1] === "r")])`, &dbg)
		t.Fatalf("player at the end is %dx%d, alice's terminal was %dx%d; %s", end.Cols, end.Rows, wantCols, wantRows, dbg)
	}
	shot := filepath.Join(harness.RepoRoot(), "tests", "artifacts", "browser-recorded-player.png")
	must(os.MkdirAll(filepath.Dir(shot), 0o755))
	must(p.screenshot(ctx, shot))
}
