package frontend

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"sluice/frontend/hub"
)

func TestHTTP(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(string) []string { return []string{"cat"} })
	cases := []struct {
		method, path string
		status       int
		ctype        string
		body         string
	}{
		{"GET", "/", 200, "text/html", `<script src="/static/app.js"`},
		{"GET", "/enroll", 200, "text/html", "Create a passkey"},
		{"GET", "/static/app.js", 200, "text/javascript", "navigator.credentials"},
		{"GET", "/static/xterm.js", 200, "text/javascript", "Terminal"},
		{"GET", "/static/addon-fit.js", 200, "text/javascript", "FitAddon"},
		{"GET", "/static/xterm.css", 200, "text/css", ".xterm"},
		{"HEAD", "/", 200, "text/html", ""},
		{"GET", "/static/", 404, "", ""},
		{"GET", "/static/../go.mod", 404, "", ""},
		{"GET", "/nothing", 404, "", ""},
		{"POST", "/", 405, "", ""},
		{"GET", "/ws", 403, "", ""}, // no Origin
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, l.base+c.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) {
				t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
			}
			if !strings.Contains(string(body), c.body) {
				t.Fatalf("body lacks %q", c.body)
			}
			// Every response, errors too, carries the security headers.
			h := resp.Header
			if h.Get("Content-Security-Policy") != CSP || h.Get("X-Frame-Options") != "DENY" ||
				h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
				t.Fatalf("security headers missing: %v", h)
			}
			if h.Get("Set-Cookie") != "" {
				t.Fatal("a cookie was set")
			}
		})
	}
	// Files are streamed from the embedded data: whole, with their length.
	for _, name := range []string{"web/static/index.html", "web/static/app.js"} {
		want, err := staticFS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		path := "/static/" + strings.TrimPrefix(name, "web/static/")
		for _, method := range []string{"GET", "HEAD"} {
			req, _ := http.NewRequest(method, l.base+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ContentLength != int64(len(want)) {
				t.Errorf("%s %s: Content-Length %d, want %d", method, path, resp.ContentLength, len(want))
			}
			if method == "GET" && string(body) != string(want) {
				t.Errorf("%s %s: body of %d bytes differs from the embedded %d", method, path, len(body), len(want))
			}
		}
	}
	if strings.Contains(CSP, "script-src 'self' 'unsafe") || !strings.Contains(CSP, "frame-ancestors 'none'") {
		t.Fatalf("CSP too loose: %s", CSP)
	}
}

// The page has no inline script or handler attribute, which the CSP
// would block.
func TestNoInlineScript(t *testing.T) {
	b, err := staticFS.ReadFile("web/static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, bad := range []string{"<script>", "onclick=", "onload=", "onsubmit=", "javascript:", "<style"} {
		if strings.Contains(html, bad) {
			t.Fatalf("index.html contains %q", bad)
		}
	}
}

// Through the WebSocket without a helper: ops that need a sign-in are
// refused before it, and a session streams and exits with its tail.
func TestWebSocketLocal(t *testing.T) {
	l := startLocal(t, hub.Options{}, func(user string) []string {
		return []string{"sh", "-c", "stty raw -echo; head -c 200000 /dev/zero | tr '\\0' x; printf TAIL"}
	})
	c := l.dial(t)
	c.create(t, "x")
	var n int
	var out []byte
	for {
		b, exit := c.read(t, true)
		if exit {
			break
		}
		n += len(b)
		out = append(out[max(0, len(out)-16):], b...)
	}
	if n != 200004 || !strings.HasSuffix(string(out), "TAIL") {
		t.Fatalf("got %d bytes ending %q", n, out)
	}
}
