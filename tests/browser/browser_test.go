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
	s := startSuite(t, policyFile, nil)
	// A safety net against hangs, not a speed requirement.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	p, must := openPage(t, ctx, exe, "")

	// A platform authenticator with a resident key and user verification,
	// which answers without a prompt.
	must(p.call(ctx, "WebAuthn.enable", map[string]any{"enableUI": false}, nil))
	addAuth := func() string { return addAuthenticator(ctx, p, must) }
	authenticator := addAuth()

	// The enrollment link sluicectl prints, token in the fragment.
	_, link, err := s.Enroll("alice")
	must(err)
	if !strings.HasPrefix(link, s.Origin+"/enroll#") {
		t.Fatalf("enrollment link %q", link)
	}
	enroll(ctx, p, must, link)
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
	carols := addAuth()
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

	passkeysPanel(t, ctx, s, p, must, carols, addAuth)
}

// passkeysPanel: carol, signed in, sees her one passkey as "this one",
// adds another in a second authenticator (the registration ceremony of
// enrollment, with a token the page never sees), removes it, then removes
// the last one only after confirming, which revokes her sign-in: the
// socket is closed and the page says so.
func passkeysPanel(t *testing.T, ctx context.Context, s *harness.Suite, p *page, must func(error), first string, addAuthenticator func() string) {
	t.Helper()
	rows := `[...document.querySelectorAll("#passkeys tbody tr")].map(r => [...r.cells].slice(0, 4).map(c => c.textContent))`
	type row = []string
	var got []row
	must(p.waitFor(ctx, "carol's passkey", `document.querySelectorAll("#passkeys tbody tr").length === 1`))
	must(p.eval(ctx, rows, &got))
	if len(got) != 1 || got[0][0] != "(unnamed)" || got[0][2] == "never" || got[0][3] != "this one" {
		t.Fatalf("carol's passkeys: %q", got)
	}

	// A second device. Chromium has room for one platform authenticator,
	// so the first goes (the tab stays signed in: the grant is in the
	// socket, not in the authenticator).
	must(p.call(ctx, "WebAuthn.removeVirtualAuthenticator", map[string]any{"authenticatorId": first}, nil))
	var creds struct {
		Credentials []any `json:"credentials"`
	}
	second := addAuthenticator()
	must(p.eval(ctx, `(() => { const f = document.getElementById("passkey-add"); f.elements.namedItem("name").value = "phone"; f.requestSubmit(); })()`, nil))
	must(p.waitFor(ctx, "the added passkey", `document.querySelectorAll("#passkeys tbody tr").length === 2`))
	must(p.eval(ctx, rows, &got))
	// In auth's order, which is not the order of creation.
	byName := map[string]row{}
	for _, r := range got {
		byName[r[0]] = r
	}
	if ph, old := byName["phone"], byName["(unnamed)"]; len(got) != 2 || ph == nil || old == nil ||
		ph[2] != "never" || ph[3] != "" || old[3] != "this one" {
		t.Fatalf("passkeys after adding one: %q", got)
	}
	must(p.call(ctx, "WebAuthn.getCredentials", map[string]any{"authenticatorId": second}, &creds))
	if len(creds.Credentials) != 1 {
		t.Fatalf("the new authenticator holds %d credentials, want the one just made", len(creds.Credentials))
	}
	sluicectl := func(args ...string) ([]byte, error) {
		cmd := exec.Command(filepath.Join(s.Bin, "sluicectl"), args...)
		cmd.Env = s.Env()
		return cmd.CombinedOutput()
	}
	out, err := sluicectl("passkeys", "list", "carol", "--json")
	if err != nil || strings.Count(string(out), `"id"`) != 2 || !strings.Contains(string(out), `"name": "phone"`) {
		t.Fatalf("sluicectl passkeys list carol after the page added one: %v\n%s", err, out)
	}

	// Not the last: removed at once.
	must(p.eval(ctx, `[...document.querySelectorAll("#passkeys tbody tr")].find(r => r.cells[0].textContent === "phone").querySelector("button.passkey-remove").click()`, nil))
	must(p.waitFor(ctx, "the removal", `document.querySelectorAll("#passkeys tbody tr").length === 1 && document.getElementById("status").textContent === "Passkey removed."`))
	must(p.eval(ctx, rows, &got))
	if len(got) != 1 || got[0][3] != "this one" {
		t.Fatalf("passkeys after removing the new one: %q", got)
	}

	// The last one: a confirmation first; keeping it changes nothing.
	must(p.eval(ctx, `document.querySelector("#passkeys button.passkey-remove").click()`, nil))
	must(p.waitFor(ctx, "the confirmation", `!document.getElementById("passkey-last").hidden`))
	must(p.eval(ctx, `document.getElementById("passkey-last-cancel").click()`, nil))
	must(p.waitFor(ctx, "the confirmation gone", `document.getElementById("passkey-last").hidden`))
	must(p.eval(ctx, `document.querySelector("#passkeys button.passkey-remove").click()`, nil))
	must(p.waitFor(ctx, "the confirmation", `!document.getElementById("passkey-last").hidden`))
	must(p.eval(ctx, `document.getElementById("passkey-last-confirm").click()`, nil))
	// It was the one this tab signed in with: access is revoked at once.
	must(p.waitFor(ctx, "the revoked sign-in", `document.getElementById("status").textContent.startsWith("Access revoked")`))
	out, err = sluicectl("passkeys", "list", "carol", "--json")
	if err != nil || strings.Contains(string(out), `"id"`) {
		t.Fatalf("sluicectl passkeys list carol after removing both: %v\n%s", err, out)
	}
}
