// Package browser drives the page in Debian's chromium, headless, with the
// DevTools WebAuthn virtual authenticator standing in for a passkey:
// enroll, sign in, open a shell, type into xterm.js and read the answer
// from the page. The screenshot is kept in tests/artifacts/.
package browser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/tests/harness"
)

const policyFile = `# browser test policy
allow alice as root on .host
allow alice as * on web1
`

// chromium finds the browser. `make test` installs Debian's chromium
// (scripts/deps.sh), so on CI it is always there.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium: install Debian's chromium package (make deps does)")
	return ""
}

func TestPasskeyAndTerminalInChromium(t *testing.T) {
	exe := chromium(t)
	s, err := harness.Start(policyFile)
	defer s.Stop()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			s.DumpLogs(os.Stderr)
		}
	}()
	// A safety net against hangs, not a speed requirement.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	b, err := launch(ctx, exe, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	p, err := b.newPage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			var status string
			p.eval(context.Background(), `document.getElementById("status").textContent`, &status)
			t.Fatalf("%v (page status: %q)\nchromium log:\n%s", err, status, b.log)
		}
	}

	// A platform authenticator with a resident key and user verification,
	// which answers without a prompt.
	must(p.call(ctx, "WebAuthn.enable", map[string]any{"enableUI": false}, nil))
	addAuthenticator := func() string {
		t.Helper()
		var a struct {
			AuthenticatorID string `json:"authenticatorId"`
		}
		must(p.call(ctx, "WebAuthn.addVirtualAuthenticator", map[string]any{"options": map[string]any{
			"protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
			"hasUserVerification": true, "isUserVerified": true, "automaticPresenceSimulation": true,
		}}, &a))
		return a.AuthenticatorID
	}
	authenticator := addAuthenticator()

	// The enrollment link sluicectl prints, token in the fragment.
	_, link, err := s.Enroll("alice")
	must(err)
	if !strings.HasPrefix(link, s.Origin+"/enroll#") {
		t.Fatalf("enrollment link %q", link)
	}
	must(p.call(ctx, "Page.navigate", map[string]any{"url": link}, nil))
	must(p.waitFor(ctx, "the enroll page", `document.body.dataset.view === "enroll"`))
	must(p.eval(ctx, `document.getElementById("enroll-button").click()`, nil))
	must(p.waitFor(ctx, "registration", `document.body.dataset.view === "signin"`))
	var href string
	must(p.eval(ctx, `location.href`, &href))
	if strings.Contains(href, "#") {
		t.Fatalf("the spent token stayed in the address bar: %s", href)
	}

	must(p.eval(ctx, `document.getElementById("signin-button").click()`, nil))
	must(p.waitFor(ctx, "the sessions page", `document.body.dataset.view === "sessions"`))
	// The form offers what the policy allows alice: root on .host in one
	// click, any account on web1 to type, the names as suggestions.
	must(p.waitFor(ctx, "the policy's targets", `[...document.querySelectorAll("#targets button")].map(b => b.textContent).join("|") === "root on .host"`))
	var form struct {
		Users, Machines []string
		Patterns        string
		None, Disabled  bool
	}
	must(p.eval(ctx, `({
		users: [...document.querySelectorAll("#user-choices option")].map(o => o.value),
		machines: [...document.querySelectorAll("#machine-choices option")].map(o => o.value),
		patterns: document.getElementById("targets-patterns").hidden ? "" : document.getElementById("targets-patterns").textContent,
		none: !document.getElementById("targets-none").hidden,
		disabled: document.getElementById("new-session-submit").disabled,
	})`, &form))
	if strings.Join(form.Users, "|") != "root" || strings.Join(form.Machines, "|") != ".host|web1" ||
		form.Patterns != "Also allowed: any account on web1." || form.None || form.Disabled {
		t.Fatalf("new-session form for alice: %+v", form)
	}
	must(p.eval(ctx, `document.querySelector("#targets button").click()`, nil))
	must(p.waitFor(ctx, "the terminal", `document.body.dataset.view === "term" && document.querySelector(".xterm-rows") && document.querySelector(".xterm-rows").textContent.includes("#")`))

	must(p.eval(ctx, `document.querySelector(".xterm-helper-textarea").focus()`, nil))
	must(p.typeText(ctx, "echo $((6*7)) ü-✓", true))
	// The answer on a line of its own, as xterm.js rendered it.
	must(p.waitFor(ctx, "the answer", `[...document.querySelectorAll(".xterm-rows > div")].some(r => r.textContent.trim() === "42 ü-✓")`))
	var title string
	must(p.eval(ctx, `document.title`, &title))
	if !strings.Contains(title, "root@") {
		t.Fatalf("tab title %q does not name the session", title)
	}

	dir := filepath.Join(harness.RepoRoot(), "tests", "artifacts")
	must(os.MkdirAll(dir, 0o755))
	shot := filepath.Join(dir, "browser-terminal.png")
	must(p.screenshot(ctx, shot))
	t.Logf("screenshot: %s", shot)

	// Carol, whom the policy allows nothing, is told so plainly and gets
	// no button to press. (An authenticator of her own: with two passkeys
	// in one, which signs in would be the browser's choice.)
	must(p.call(ctx, "WebAuthn.removeVirtualAuthenticator", map[string]any{"authenticatorId": authenticator}, nil))
	addAuthenticator()
	_, link, err = s.Enroll("carol")
	must(err)
	must(p.call(ctx, "Page.navigate", map[string]any{"url": link}, nil))
	must(p.waitFor(ctx, "carol's enroll page", `document.body.dataset.view === "enroll" && document.getElementById("who").textContent === ""`))
	must(p.eval(ctx, `document.getElementById("enroll-button").click()`, nil))
	must(p.waitFor(ctx, "carol's registration", `document.body.dataset.view === "signin"`))
	must(p.eval(ctx, `document.getElementById("signin-button").click()`, nil))
	must(p.waitFor(ctx, "carol's sessions page", `document.body.dataset.view === "sessions" && document.getElementById("who").textContent === "signed in as carol"`))
	must(p.waitFor(ctx, "the empty list", `!document.getElementById("targets-none").hidden`))
	var empty struct {
		Text             string
		Buttons          int
		Disabled, Hidden bool
	}
	must(p.eval(ctx, `({
		text: document.getElementById("targets-none").textContent,
		buttons: document.querySelectorAll("#targets button").length,
		disabled: document.getElementById("new-session-submit").disabled,
		hidden: document.getElementById("targets-patterns").hidden,
	})`, &empty))
	if empty.Text != "The policy allows you no shells on this host." || empty.Buttons != 0 || !empty.Disabled || !empty.Hidden {
		t.Fatalf("new-session form for carol: %+v", empty)
	}
}
