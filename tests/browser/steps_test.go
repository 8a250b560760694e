package browser

import (
	"context"
	"fmt"
	"os"
	"testing"

	"sluice/tests/harness"
	"sluice/tests/suiterun"
)

// The steps the browser tests share: a suite, a chromium page, a passkey,
// the enroll and sign-in ceremonies, and the recording player.

// startSuite is harness.StartTweaked (tweak may be nil), stopped when the
// test ends, its logs dumped first if the test failed.
func startSuite(t *testing.T, policy string, tweak func(suiterun.RawConfig)) *harness.Suite {
	t.Helper()
	s, err := harness.StartTweaked(policy, tweak)
	t.Cleanup(s.Stop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.DumpLogs(os.Stderr)
		}
	})
	return s
}

// openPage is a page in a chromium of its own (its own cookies and
// passkeys), closed when the test ends, and the page's must: an error
// fails the test with who (if any), the page's status and chromium's log.
func openPage(t *testing.T, ctx context.Context, exe, who string) (*page, func(error)) {
	t.Helper()
	b, err := launch(ctx, exe, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	p, err := b.newPage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			if who != "" {
				err = fmt.Errorf("%s: %w", who, err)
			}
			var status string
			p.eval(context.Background(), `document.getElementById("status").textContent`, &status)
			t.Fatalf("%v (page status: %q)\nchromium log:\n%s", err, status, b.log)
		}
	}
	return p, must
}

// addAuthenticator gives p a platform authenticator with a resident key
// and user verification, which answers without a prompt, and returns its
// id. WebAuthn must be enabled on p.
func addAuthenticator(ctx context.Context, p *page, must func(error)) string {
	var a struct {
		AuthenticatorID string `json:"authenticatorId"`
	}
	must(p.call(ctx, "WebAuthn.addVirtualAuthenticator", map[string]any{"options": map[string]any{
		"protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
		"hasUserVerification": true, "isUserVerified": true, "automaticPresenceSimulation": true,
	}}, &a))
	return a.AuthenticatorID
}

// enroll follows an enrollment link and registers a passkey, up to the
// sign-in view.
func enroll(ctx context.Context, p *page, must func(error), link string) {
	must(p.call(ctx, "Page.navigate", map[string]any{"url": link}, nil))
	must(p.waitFor(ctx, "the enroll page", `document.body.dataset.view === "enroll"`))
	must(p.eval(ctx, `document.getElementById("enroll-button").click()`, nil))
	must(p.waitFor(ctx, "registration", `document.body.dataset.view === "signin"`))
}

// player drives window.sluicePlayer, the recording player, in a page.
type player struct {
	t    *testing.T
	ctx  context.Context
	p    *page
	must func(error)
}

func (pl player) state() playerState {
	pl.t.Helper()
	var st playerState
	pl.must(pl.p.eval(pl.ctx, `window.sluicePlayer.state()`, &st))
	return st
}

// screen is the player's terminal as text.
func (pl player) screen() string {
	pl.t.Helper()
	var text string
	pl.must(pl.p.eval(pl.ctx, `window.sluicePlayer.text()`, &text))
	return text
}

// seek moves the seek bar to a time (seconds, as the bar's value) and
// waits for the replay up to it.
func (pl player) seek(to string) {
	pl.t.Helper()
	pl.must(pl.p.eval(pl.ctx, `(() => { const s = document.getElementById("player-seek"); s.value = "`+to+`"; s.dispatchEvent(new Event("input")); })()`, nil))
	pl.must(pl.p.waitFor(pl.ctx, "the seek replayed", `window.sluicePlayer.state().settled`))
}
