package browser

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/tests/fleet/fleetenv"
	"sluice/tests/harness"
)

// TestFleetInChromium: a gateway and three hosts (network namespaces,
// each with a real sshd and its own suite, tests/fleet/fleetenv). Alice
// signs in once at the gateway's page; it lists the hosts with what each
// host's own policy offers her, and she types into shells on h1 and h2;
// h3, whose policy allows her nothing, says so, and opening a shell there
// anyway shows h3's denial. Back on the list, her sessions are listed
// under their hosts and reattach. Each session is held by its own host.
func TestFleetInChromium(t *testing.T) {
	exe := chromium(t)
	e := fleetenv.New(t, fleetenv.Options{Page: true, Policies: map[string]string{
		"h1": "allow alice as root on .host\n",
		"h2": "allow alice as root on .host\n",
		"h3": "allow bob as root on .host\n",
	}})
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
			var status, fleet string
			p.eval(context.Background(), `document.getElementById("status").textContent`, &status)
			p.eval(context.Background(), `document.getElementById("fleet").innerText`, &fleet)
			t.Fatalf("%v (page status: %q; fleet view: %q)\n%s\n--- gateway\n%s", err, status, fleet, e.Logs(),
				fleetenv.Tail(e.GW.Log.String(), 4000))
		}
	}
	must(p.call(ctx, "WebAuthn.enable", map[string]any{"enableUI": false}, nil))
	addAuthenticator(ctx, p, must)

	tok, err := e.GW.Enroll(ctx, "alice")
	must(err)
	enroll(ctx, p, must, e.GW.Origin+"/enroll#"+tok)
	// The one sign-in.
	must(p.eval(ctx, `document.getElementById("signin-button").click()`, nil))
	must(p.waitFor(ctx, "the sessions page", `document.body.dataset.view === "sessions"`))

	host := func(n string) string { return `document.querySelector('#fleet-hosts section[data-host="` + n + `"]')` }
	listed := `[...document.querySelectorAll("#fleet-hosts section")].map(s => s.dataset.host).sort().join("|") === "h1|h2|h3"`
	must(p.waitFor(ctx, "the fleet's hosts", listed))
	for _, n := range []string{"h1", "h2"} {
		must(p.waitFor(ctx, n+"'s targets", `[...`+host(n)+`.querySelectorAll(".targets button")].map(b => b.textContent).join("|") === "root on .host"`))
	}
	// h3's own policy allows alice nothing: said, and no button.
	must(p.waitFor(ctx, "h3's refusal", host("h3")+`.querySelector(".fleet-none").textContent === "The policy of h3 allows you no shells there." && `+
		host("h3")+`.querySelectorAll(".targets button").length === 0`))

	shellOn := func(n string) {
		t.Helper()
		must(p.eval(ctx, host(n)+`.querySelector(".targets button").click()`, nil))
		must(p.waitFor(ctx, "the terminal on "+n, `document.body.dataset.view === "term" && document.getElementById("term-title").textContent === "root on `+n+` .host" && document.querySelector(".xterm-rows").textContent.includes("#")`))
		must(p.eval(ctx, `document.querySelector(".xterm-helper-textarea").focus()`, nil))
		must(p.typeText(ctx, "X=kept-"+n+"; echo fleet-$((6*7))-"+n, true))
		must(p.waitFor(ctx, "the answer on "+n, `[...document.querySelectorAll(".xterm-rows > div")].some(r => r.textContent.trim() === "fleet-42-`+n+`")`))
	}
	back := func() {
		t.Helper()
		must(p.eval(ctx, `document.getElementById("term-back").click()`, nil))
		must(p.waitFor(ctx, "the sessions page", `document.body.dataset.view === "sessions"`))
		must(p.waitFor(ctx, "the fleet's hosts", listed+` && document.getElementById("fleet-note").textContent === ""`))
	}
	shellOn("h1")
	dir := filepath.Join(harness.RepoRoot(), "tests", "artifacts")
	must(os.MkdirAll(dir, 0o755))
	must(p.screenshot(ctx, filepath.Join(dir, "browser-fleet-terminal.png")))
	back()
	shellOn("h2")
	back()

	// A shell on h3 anyway, through its form: h3's policy says no.
	must(p.eval(ctx, `(() => { const f = `+host("h3")+`.querySelector("form"); f.elements.namedItem("user").value = "root"; f.requestSubmit(); })()`, nil))
	must(p.waitFor(ctx, "h3's denial", `document.body.dataset.view === "sessions" && document.getElementById("status").textContent.startsWith("Denied: h3: ")`))

	must(p.screenshot(ctx, filepath.Join(dir, "browser-fleet-hosts.png")))

	// Each host holds its own session, and the page lists it there.
	for _, n := range []string{"h1", "h2"} {
		ss, err := e.Hosts[n].Suite.Sessions(ctx)
		if err != nil || len(ss) != 1 || ss[0].Owner != "alice" {
			t.Fatalf("%s's ptystore holds %+v (%v)", n, ss, err)
		}
		must(p.waitFor(ctx, n+"'s session listed", `[...`+host(n)+`.querySelectorAll("table.fleet-sessions tbody tr")].map(r => r.dataset.id).join("|") === "`+ss[0].ID+`"`))
	}
	if ss, _ := e.GW.Sessions(ctx); len(ss) != 0 {
		t.Fatalf("the gateway's ptystore holds %+v", ss)
	}
	if ss, _ := e.Hosts["h3"].Suite.Sessions(ctx); len(ss) != 0 {
		t.Fatalf("h3 holds %+v", ss)
	}

	// Reattach to h1's: the same shell (it kept X).
	must(p.eval(ctx, host("h1")+`.querySelector("table.fleet-sessions button.open").click()`, nil))
	must(p.waitFor(ctx, "h1's session again", `document.body.dataset.view === "term" && document.getElementById("term-title").textContent === "root on h1 .host"`))
	must(p.eval(ctx, `document.querySelector(".xterm-helper-textarea").focus()`, nil))
	must(p.typeText(ctx, "echo again-$((7*7)) $X", true))
	must(p.waitFor(ctx, "the reattached shell's answer", `[...document.querySelectorAll(".xterm-rows > div")].some(r => r.textContent.trim() === "again-49 kept-h1")`))
	back()

	// Ending h2's from the page ends it on h2.
	must(p.eval(ctx, host("h2")+`.querySelector("table.fleet-sessions button.end").click()`, nil))
	must(p.waitFor(ctx, "h2's session gone from the page", host("h2")+` && !`+host("h2")+`.querySelector("table.fleet-sessions")`))
	deadline := time.Now().Add(20 * time.Second)
	for {
		ss, err := e.Hosts["h2"].Suite.Sessions(ctx)
		if err == nil && len(ss) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2 still holds %+v (%v) after end", ss, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
