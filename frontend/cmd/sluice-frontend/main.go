// Command sluice-frontend serves the sluice page and its WebSocket on the
// TCP socket it is handed ("http" activation fd, or --addr for
// development), and reaches the helpers only through their sockets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"sluice/frontend"
	"sluice/frontend/hub"
	"sluice/helpers/confine"
	"sluice/helpers/helper"
	"sluice/helpers/revoke"
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
	flag.Parse()
	log := helper.Logger(msg.Frontend)

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
	srv, err := frontend.New(frontend.Config{
		Origins: origins,
		Backend: backend,
		Hub:     hub.Options{Window: *window, RingMax: *ring, StallTimeout: *stall},
		Log:     log,

		RevocationDir: *revocationDir,
	})
	if err != nil {
		helper.Fatal(log, "frontend", err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	var read []string
	if *revocationDir != "" {
		read = append(read, *revocationDir)
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
	log.Info("serving", "addr", l.Addr().String(), "origins", []string(origins))
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
