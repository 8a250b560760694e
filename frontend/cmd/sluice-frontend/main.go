// Command sluice-frontend serves the sluice page and its WebSocket on the
// TCP socket it is handed ("http" activation fd, or --addr for
// development), and reaches the helpers only through their sockets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"sluice/frontend"
	"sluice/frontend/admit"
	"sluice/frontend/hub"
	"sluice/internal/confine"
	"sluice/internal/helper"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
	"sluice/sdnotify"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var origins listFlag
	addr := flag.String("addr", "", "listen on this TCP address (e.g. 127.0.0.1:8080) instead of the \"http\" activation fd")
	flag.Var(&origins, "origin", "allowed page origin, must match the auth helper's (repeatable; default http://localhost:PORT of the listener)")
	window := flag.Int("window", 0, "bytes a browser may have unacknowledged per session (default 64 KiB)")
	ring := flag.Int("scrollback", 0, "scrollback kept per session for reattach, in bytes (default 256 KiB)")
	revocationDir := flag.String("revocation-dir", "", "directory of the revocation list auth publishes ("+revoke.DefaultDir+" under systemd): connections whose grant it revokes are closed")
	stall := flag.Duration("stall-timeout", 0, "a typing viewer that acknowledges nothing this long while another waits stops holding the shell back (default 5s)")
	maxConns := flag.Int("max-conns", admit.DefaultMaxConns, "connections open at once; beyond it, HTTP 503 (lowered to fit RLIMIT_NOFILE)")
	maxUnauth := flag.Int("max-unauth", admit.DefaultMaxUnauth, "connections not signed in yet, in total")
	maxUnauthSource := flag.Int("max-unauth-per-source", admit.DefaultMaxUnauthPerSource, "connections not signed in yet from one address (-1: no cap; behind a reverse proxy every connection is the proxy's)")
	grace := flag.Duration("login-grace", frontend.DefaultLoginGrace, "a WebSocket not signed in this long after it opened is closed")
	signInRate := flag.Int("signin-rate", admit.DefaultSignInsPerMinute, "sign-in and enrollment ceremonies per source address per minute (0: no limit)")
	fleetOn := flag.Bool("fleet", false, "this is a fleet's gateway: the page lists the hosts of the fleet helper (fleet.sock) and opens sessions on them (docs/fleet.md)")
	recDir := flag.String("recordings-dir", "", "development only: serve the asciicast files of this directory to auditors instead of asking the recording helper (see docs/frontend.md)")
	flag.Parse()
	log := helper.Logger(msg.Frontend)

	// Before any socket: the caps must be what refuses, not EMFILE.
	limits, nofile := admit.FitNoFile(admit.Limits{MaxConns: *maxConns, MaxUnauth: *maxUnauth, MaxUnauthPerSource: *maxUnauthSource}, log)
	gate := admit.NewGate(limits, log)

	l, err := listener(*addr)
	if err != nil {
		helper.Fatal(log, "no listening socket", err)
	}
	if len(origins) == 0 {
		origins = defaultOrigins(l.Addr())
	}
	backend, err := frontend.NewHelpers()
	if err != nil {
		helper.Fatal(log, "helper clients", err)
	}
	var fleet frontend.FleetBackend
	if *fleetOn {
		fh, err := backend.Fleet()
		if err != nil {
			helper.Fatal(log, "fleet client", err)
		}
		fleet = fh
	}
	srv, err := frontend.New(frontend.Config{
		Origins:    origins,
		Backend:    backend,
		Hub:        hub.Options{Window: *window, RingMax: *ring, StallTimeout: *stall},
		Log:        log,
		Gate:       gate,
		LoginGrace: *grace,
		SignInRate: admit.NewRate(*signInRate),

		RevocationDir: *revocationDir,
		Recordings:    recordings(*recDir, backend),
		Fleet:         fleet,
	})
	if err != nil {
		helper.Fatal(log, "frontend", err)
	}
	// Plain requests are small GETs; a WebSocket's deadlines are cleared
	// by the upgrade and its own apply from then on. An idle keep-alive
	// connection counts as waiting to sign in, so it goes soon.
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var read []string
	if *revocationDir != "" {
		read = append(read, *revocationDir)
	}
	if *recDir != "" {
		read = append(read, *recDir)
	}
	confine.Helper(log, confine.Profile{Name: msg.Frontend, Read: read})
	ctx, stop := helper.Context()
	defer stop()
	go func() {
		<-ctx.Done()
		sdnotify.Stopping()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		srv.Close()
	}()
	l = gate.Listen(l)
	lim := gate.Limits()
	log.Info("serving", "addr", l.Addr().String(), "origins", []string(origins), "max_conns", lim.MaxConns,
		"max_unauth", lim.MaxUnauth, "max_unauth_per_source", lim.MaxUnauthPerSource, "login_grace", *grace,
		"signin_rate", *signInRate, "nofile", nofile)
	if err := sdnotify.Ready(); err != nil && !errors.Is(err, sdnotify.ErrNoSocket) {
		log.Warn("sd_notify READY", "err", err)
	}
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		helper.Fatal(log, "serve", err)
	}
}

// listener is --addr, or the activation fd named "http" (or the only one).
func listener(addr string) (net.Listener, error) {
	if addr != "" {
		return net.Listen("tcp", addr)
	}
	files := rpc.ActivationFiles()
	if len(files) == 0 {
		return nil, errors.New("no activation fds (LISTEN_FDS unset); use --addr 127.0.0.1:8080")
	}
	f := files[0]
	if named, _ := rpc.SplitFiles(files, "http"); len(named) > 0 {
		f = named[0]
	}
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("activation fd %s: %w", f.Name(), err)
	}
	return l, nil
}

// defaultOrigins is what a browser on this machine sends: passkeys need a
// domain, so localhost rather than the loopback address.
func defaultOrigins(a net.Addr) []string {
	port := "8080"
	if ta, ok := a.(*net.TCPAddr); ok {
		port = fmt.Sprint(ta.Port)
	}
	return []string{"http://localhost:" + port}
}

// recordings is the page's source of recordings: the recording helper,
// or with --recordings-dir the development stand-in, which reads the
// directory itself and asks policy's audit scope for each call.
func recordings(dir string, b *frontend.Helpers) frontend.RecordingSource {
	if dir == "" {
		return b.Recordings()
	}
	return &frontend.DirRecordings{Dir: dir, Scope: func(ctx context.Context, g msg.Grant) (msg.AuditScopeReply, error) {
		return b.AuditScope(ctx, msg.AuditScope{Grant: g})
	}}
}
