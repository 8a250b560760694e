// Package helper is the common start of every sluice helper's main: flags,
// logging, the caller allowlists, and the serve step. It keeps each main
// down to "config, handler, serve".
package helper

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice/journal"
	"sluice/rpc"
)

// Flags common to all helpers.
type Flags struct {
	Listen   string // --listen PATH: listen there instead of using activation fds
	Mode     uint   // --mode: socket mode with --listen
	Timeout  time.Duration
	MaxConns int
	allows   allowFlag
}

type allowFlag map[string]string

func (a allowFlag) String() string { return fmt.Sprint(map[string]string(a)) }
func (a allowFlag) Set(v string) error {
	proto, spec, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want PROTOCOL=SPEC, got %q", v)
	}
	a[proto] = spec
	return nil
}

// Register adds the common flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	f.allows = allowFlag{}
	fs.StringVar(&f.Listen, "listen", "", "listen on this socket path instead of systemd/runner activation fds")
	fs.UintVar(&f.Mode, "mode", 0o660, "socket mode with --listen")
	fs.DurationVar(&f.Timeout, "timeout", 5*time.Second, "deadline for one whole call")
	fs.IntVar(&f.MaxConns, "max-conns", 64, "concurrent connections before refusing with busy")
	fs.Var(f.allows, "allow", "`PROTOCOL=SPEC` callers allowed on a protocol; SPEC is a comma list of uid:N, user:NAME, gid:N, group:NAME (repeatable; default: this helper's own uid only)")
}

// Allow returns the allowlist for a protocol: the --allow flag for it, or
// $SLUICE_ALLOW_<PROTOCOL> (spaces as underscores, upper case), or else
// only the helper's own uid, which is right for a single-user runner and
// safe anywhere else.
func (f *Flags) Allow(protocol string) (rpc.Allow, error) {
	spec, ok := f.allows[protocol]
	if !ok {
		spec, ok = os.LookupEnv("SLUICE_ALLOW_" + strings.ToUpper(strings.ReplaceAll(protocol, " ", "_")))
	}
	if !ok {
		return rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}, nil
	}
	return ParseAllow(spec)
}

// ParseAllow parses "uid:0,group:sluice-web,user:alice,gid:5".
func ParseAllow(spec string) (rpc.Allow, error) {
	var a rpc.Allow
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kind, val, ok := strings.Cut(item, ":")
		if !ok {
			return a, fmt.Errorf("helper: allow %q: want KIND:VALUE", item)
		}
		switch kind {
		case "uid", "gid":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return a, fmt.Errorf("helper: allow %q: %w", item, err)
			}
			if kind == "uid" {
				a.UIDs = append(a.UIDs, uint32(n))
			} else {
				a.GIDs = append(a.GIDs, uint32(n))
			}
		case "user":
			u, err := user.Lookup(val)
			if err != nil {
				return a, fmt.Errorf("helper: allow %q: %w", item, err)
			}
			n, _ := strconv.ParseUint(u.Uid, 10, 32)
			a.UIDs = append(a.UIDs, uint32(n))
		case "group":
			g, err := user.LookupGroup(val)
			if err != nil {
				return a, fmt.Errorf("helper: allow %q: %w", item, err)
			}
			n, _ := strconv.ParseUint(g.Gid, 10, 32)
			a.GIDs = append(a.GIDs, uint32(n))
		default:
			return a, fmt.Errorf("helper: allow %q: unknown kind %q", item, kind)
		}
	}
	return a, nil
}

// Logger returns the slog logger for a helper: text on stderr, which the
// journal collects under systemd and the runner prefixes with the name.
// Under systemd (JOURNAL_STREAM set) the time is left to the journal.
func Logger(name string) *slog.Logger {
	opts := &slog.HandlerOptions{}
	if os.Getenv("JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	text := slog.NewTextHandler(os.Stderr, opts)
	// Under systemd, native journal entries: every attribute becomes a
	// field (SLUICE_CALL, SLUICE_RESULT, SLUICE_UID, ...), see package journal.
	if journal.StderrIsJournal() {
		if j, err := journal.New(journal.Socket, "sluice-"+name, nil, text); err == nil {
			return slog.New(j).With("helper", name)
		}
	}
	return slog.New(text).With("helper", name)
}

// Context is cancelled on SIGINT or SIGTERM.
//
// The handlers are installed by a goroutine of its own, not before
// Context returns as signal.NotifyContext does: os/signal's first Notify
// starts a goroutine locked to a new thread and waits for it once per
// signal, and NotifyContext's stop waits for it again. In an Accept=yes
// instance, which lives for one call, those waits and the extra thread
// were about a tenth of the whole call (bench/NOTES.md, "Accept=yes spawns
// again"). Until that goroutine has run, SIGINT and SIGTERM keep their
// default action and end the process, as they do during all of startup
// before Context is called. After cancel the signals stay caught (and
// ignored) until the process exits, which in every helper follows
// cancel at once; nothing waits on os/signal at exit.
func Context() (context.Context, context.CancelFunc) {
	ctx, cancel, _ := notifyContext(syscall.SIGINT, syscall.SIGTERM)
	return ctx, cancel
}

// notifyContext is Context for sigs; ready is closed once the handlers
// are in place.
func notifyContext(sigs ...os.Signal) (ctx context.Context, cancel context.CancelFunc, ready <-chan struct{}) {
	ctx, cancel = context.WithCancel(context.Background())
	r := make(chan struct{})
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, sigs...)
		close(r)
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel, r
}

// Server builds the rpc server from the flags.
func (f *Flags) Server(name string, log *slog.Logger, routes ...rpc.Route) *rpc.Server {
	return &rpc.Server{Name: name, Routes: routes, Timeout: f.Timeout, MaxConns: f.MaxConns, Log: log}
}

// Serve runs the serve step: --listen, or the activation fds.
func (f *Flags) Serve(ctx context.Context, s *rpc.Server, files []*os.File) error {
	return rpc.ServeMain(ctx, s, f.Listen, os.FileMode(f.Mode), files)
}

// Credential is the path of a file systemd passed with LoadCredential= (the
// embedded runner does the same), or "" when there is no credentials
// directory.
func Credential(name string) string {
	if d := os.Getenv("CREDENTIALS_DIRECTORY"); d != "" {
		return filepath.Join(d, name)
	}
	return ""
}

// Fatal logs and exits 1; for startup errors only.
func Fatal(log *slog.Logger, msg string, err error) {
	log.Error(msg, "err", err)
	os.Exit(1)
}
