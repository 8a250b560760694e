// Package frontend is sluice's web process: it serves the page, and over
// one WebSocket per tab relays the passkey ceremonies to the auth helper,
// keeps the resulting grant in that connection's memory only, and streams
// pty sessions from the hub. It holds no secret and no privilege; every
// decision is a helper's.
package frontend

import (
	"embed"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"sluice/frontend/admit"
	"sluice/frontend/hub"
)

//go:embed web/static
var staticFS embed.FS

//go:embed web/dist
var distFS embed.FS

// CSP allows scripts and connections only to this origin and nothing to
// frame the page. style-src needs 'unsafe-inline' because xterm.js sets its
// theme and cell sizes through <style> elements it creates; no script can
// be injected that way.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// Config is the frontend's configuration.
type Config struct {
	// Origins are the exact Origin header values a WebSocket upgrade may
	// carry, e.g. "http://localhost:8080". They must match the auth
	// helper's WebAuthn origins.
	Origins []string
	Backend Backend
	// Recordings lists and reads recordings for auditors; nil: the page
	// has none (see recordings.go).
	Recordings RecordingSource
	Hub        hub.Options
	Log        *slog.Logger
	// MaxMessage limits one client WebSocket message (default 64 KiB).
	MaxMessage int64
	// WriteTimeout drops a client that does not take a frame in this long
	// (default 30 s).
	WriteTimeout time.Duration
	// RevocationDir is where auth publishes the revocation list; when set,
	// the server looks at it every RevocationPoll (default 200 ms) and
	// closes the WebSockets whose grant it revokes. The helpers refuse
	// those grants on their own; this is the honest frontend's part.
	RevocationDir  string
	RevocationPoll time.Duration
	// Gate, if set, is the admission gate the listener was wrapped with
	// (admit.Gate.Listen): a connection that signs in stops counting
	// against its caps on connections waiting to sign in.
	Gate *admit.Gate
	// LoginGrace closes a WebSocket that has not signed in this long
	// after it opened (default 2 min, like sshd's LoginGraceTime).
	LoginGrace time.Duration
	// SignInRate limits sign-in and enrollment ceremonies per source
	// address; nil: no limit.
	SignInRate *admit.Rate
	// Fleet reaches the fleet's hosts (fleet.go); nil: no fleet, and the
	// page and this server are exactly the single host's.
	Fleet FleetBackend
}

// DefaultLoginGrace is Config.LoginGrace's default: time to read the
// page, pick a passkey and touch it.
const DefaultLoginGrace = 2 * time.Minute

// Server is the frontend's http.Handler.
type Server struct {
	cfg      Config
	hub      *hub.Hub
	log      *slog.Logger
	upgrader websocket.Upgrader
	files    map[string]file

	mu    sync.Mutex
	conns map[*conn]struct{}

	stopWatch chan struct{}
	watchDone chan struct{}

	lim *limiter // limits.go
}

// file is a page file, read from the binary's embedded data on each
// request: a copy on the heap at start would hold the whole page bundle
// (about 540 KiB) in every frontend's memory for its life.
type file struct {
	fsys  fs.FS
	path  string
	size  int64
	ctype string
}

// New builds the server; it starts no goroutine until a session is opened.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.LoginGrace <= 0 {
		cfg.LoginGrace = DefaultLoginGrace
	}
	if cfg.Hub.Log == nil {
		cfg.Hub.Log = cfg.Log
	}
	s := &Server{
		cfg:   cfg,
		hub:   hub.New(cfg.Hub),
		log:   cfg.Log,
		files: map[string]file{},
		conns: map[*conn]struct{}{},
	}
	s.upgrader = websocket.Upgrader{
		CheckOrigin: s.originOK,
		// A small read buffer of our own frees net/http's 4 KiB one;
		// client messages are small (keys, acks) and larger ones stream
		// through it.
		ReadBufferSize: 1024,
		// Buffers only while a frame is being written, so an idle
		// connection holds none. gorilla copies a frame through this
		// buffer and writes it out each time it fills: at the 4 KiB
		// default a 32 KiB output frame (frameSize) cost eight write
		// syscalls; this size takes any frame we send in one.
		WriteBufferSize:  64 << 10,
		WriteBufferPool:  &sync.Pool{},
		HandshakeTimeout: 10 * time.Second,
	}
	for _, src := range []struct {
		fsys fs.FS
		dir  string
	}{{staticFS, "web/static"}, {distFS, "web/dist"}} {
		err := fs.WalkDir(src.fsys, src.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			s.files[strings.TrimPrefix(p, src.dir+"/")] = file{src.fsys, p, info.Size(), contentType(p)}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if cfg.RevocationDir != "" {
		s.watchRevocations(cfg.RevocationDir, cfg.RevocationPoll)
	}
	s.lim = newLimiter(s)
	s.lim.start()
	return s, nil
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".png":
		return "image/png"
	case ".svg":
		return "image/svg+xml"
	}
	return "application/octet-stream"
}

// Hub is the session hub, for tests and benchmarks.
func (s *Server) Hub() *hub.Hub { return s.hub }

func (s *Server) originOK(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o != "" && slices.Contains(s.cfg.Origins, o)
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=(), payment=()")
}

// ServeHTTP serves the page, its static files and the WebSocket. There
// are no cookies and no state-changing requests besides the WebSocket,
// whose Origin is checked, so there is nothing for CSRF to ride on.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch p := r.URL.Path; {
	case p == "/ws":
		s.serveWS(w, r)
	case p == "/" || p == "/enroll":
		s.serveFile(w, r, "index.html")
	case strings.HasPrefix(p, "/static/"):
		s.serveFile(w, r, strings.TrimPrefix(p, "/static/"))
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	f, ok := s.files[name]
	if !ok || name == "" {
		http.NotFound(w, r)
		return
	}
	rd, err := f.fsys.Open(f.path)
	if err != nil {
		// Embedded files cannot go missing; this is the server's bug.
		s.log.Error("page file", "file", f.path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer rd.Close()
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Length", strconv.FormatInt(f.size, 10))
	if r.Method == http.MethodHead {
		return
	}
	io.Copy(w, rd)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.originOK(r) {
		s.log.Warn("websocket upgrade refused: origin", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has written the error response.
		s.log.Info("websocket upgrade failed", "err", err, "remote", r.RemoteAddr)
		return
	}
	c := newConn(s, ws, r.RemoteAddr)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	// The connection gets a goroutine of its own so that this handler
	// returns: net/http's per-connection state (its 4 KiB read and write
	// buffers, the request, the response's buffer) is only released once
	// the handler that hijacked it is done, and the goroutine that ran it
	// has a stack grown by HTTP parsing.
	go func() {
		c.run()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

// Close drops every connection and stops streaming (the shells live on in
// ptystore).
func (s *Server) Close() {
	s.lim.close()
	if s.stopWatch != nil {
		close(s.stopWatch)
		<-s.watchDone
		s.stopWatch = nil
	}
	s.mu.Lock()
	for c := range s.conns {
		c.ws.Close()
	}
	s.mu.Unlock()
	s.hub.Close()
}
