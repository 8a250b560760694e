// Command sluice-record is the recording helper: it records sessions for
// the shell helper (one process per session, which stays for the
// session's life after answering), and lists, opens and verifies them for
// sluicectl and auditors. See package sluice/helpers/record and
// docs/recording.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/confine"
	"sluice/helpers/grant"
	"sluice/helpers/helper"
	"sluice/helpers/record"
	"sluice/helpers/revoke"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	keyFile := flag.String("key", helper.Credential("record.key"), "seal key file, 32 bytes (default $CREDENTIALS_DIRECTORY/record.key)")
	dir := flag.String("dir", stateDir(), "directory of recordings (default $STATE_DIRECTORY/recordings)")
	grantKey := flag.String("grant-key", helper.Credential("grant.key"), "grant key file, to verify auditors' grants on \"web to record\" (default $CREDENTIALS_DIRECTORY/grant.key; empty: no auditors)")
	revocationDir := flag.String("revocation-dir", "", "directory of the revocation list auth publishes; empty: no revocation check")
	maxTotal := flag.String("max-total", "0", "bytes all recordings may take (K, M, G suffixes); the oldest ended ones are removed when a new one starts; 0: no bound")
	maxSize := flag.String("max-size", "0", "bytes one recording may take; past it a fail-closed session is ended; 0: no bound")
	maxAge := flag.Duration("max-age", 0, "ended recordings older than this are removed when a new one starts; 0: kept")
	flag.Parse()
	log := helper.Logger(msg.Record)

	total, err := parseSize(*maxTotal)
	if err != nil {
		helper.Fatal(log, "--max-total", err)
	}
	size, err := parseSize(*maxSize)
	if err != nil {
		helper.Fatal(log, "--max-size", err)
	}
	if *keyFile == "" {
		helper.Fatal(log, "no seal key", errors.New("set --key or $CREDENTIALS_DIRECTORY with record.key"))
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil || len(key) != record.KeySize {
		helper.Fatal(log, "seal key", fmt.Errorf("%s: want %d bytes: %v", *keyFile, record.KeySize, err))
	}
	if *dir == "" {
		helper.Fatal(log, "no --dir", errors.New("set --dir or $STATE_DIRECTORY"))
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		helper.Fatal(log, "--dir", err)
	}
	if err := os.Chmod(*dir, 0o700); err != nil {
		helper.Fatal(log, "--dir", err)
	}
	// SIGHUP is how a recorded session is ended from outside (the hangup
	// helper signals the session of the pty the frontend sees, whose
	// leader this is, and the kernel does when that pty hangs up): end the
	// recording and the shell. Job-control stops would freeze a session,
	// which only SIGCONT could thaw.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	signal.Ignore(syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	h := &record.Handler{
		Store: &record.Store{Dir: *dir, MaxTotal: total, MaxAge: *maxAge, Log: log},
		Key:   key, MaxSize: size, Log: log, Life: ctx,
	}
	read := []string{}
	if *grantKey != "" {
		if k, err := grant.LoadKey(*grantKey); err == nil {
			h.GrantKey = k
		} else if !errors.Is(err, os.ErrNotExist) {
			helper.Fatal(log, "grant key", err)
		}
	}
	if *revocationDir != "" {
		h.Revoked = revoke.NewChecker(*revocationDir)
		read = append(read, *revocationDir)
	}
	h.Audit = func(ctx context.Context, g msg.Grant) (msg.CheckAuditReply, error) {
		var rep msg.CheckAuditReply
		cl, err := suite.Client(msg.Record, "record to policy")
		if err != nil {
			return rep, err
		}
		args, err := msgpack.Marshal(msg.CheckAudit{Grant: g})
		if err != nil {
			return rep, err
		}
		_, err = cl.Call(ctx, msg.Request{Op: msg.OpCheckAudit, Args: args}, nil, &rep)
		return rep, err
	}
	// When a recorded session is ended, the pty ptystore hands the hangup
	// helper is the recorder's: the recorder passes the shell's master
	// on, so the shell's own session is ended in full.
	h.EndShell = func(ctx context.Context, inner *os.File) error {
		cl, err := suite.Client(msg.Record, "record to hangup")
		if err != nil {
			return err
		}
		args, err := msgpack.Marshal(msg.HangupSession{})
		if err != nil {
			return err
		}
		var rep msg.HangupSessionReply
		if _, err := cl.Call(ctx, msg.Request{Op: msg.OpHangup, Args: args}, []*os.File{inner}, &rep); err != nil {
			return fmt.Errorf("record to hangup: %w", err)
		}
		log.Info("record: the shell's session ended", "sid", rep.SID, "hungup", rep.Hungup, "killed", rep.Killed, "cgroup", rep.Cgroup, "elapsed_ms", rep.Elapsed)
		return nil
	}
	var routes []rpc.Route
	for _, r := range []struct {
		proto  string
		maxFDs int
		h      rpc.HandlerFunc
	}{{"shell to record", 1, h.Shell}, {"admin to record", 0, h.Admin}, {"web to record", 0, h.Web}} {
		allow, err := f.Allow(r.proto)
		if err != nil {
			helper.Fatal(log, "--allow", err)
		}
		route, err := suite.Route(msg.Record, r.proto, allow, r.maxFDs, r.h)
		if err != nil {
			helper.Fatal(log, "route", err)
		}
		routes = append(routes, route)
	}
	// Policy's socket, for check-audit; the hangup helper's.
	read = append(read, suite.RuntimeDir())
	confine.Helper(log, confine.Profile{Name: msg.Record, Read: read, Write: []string{*dir}, Listen: f.Listen})
	err = f.Serve(ctx, f.Server(msg.Record, log, routes...), rpc.ActivationFiles())
	// One process per connection: a recorded session goes on after the
	// call that started it, until the session or the helper ends.
	h.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		helper.Fatal(log, "serve", err)
	}
}

// stateDir is $STATE_DIRECTORY/recordings (systemd's StateDirectory=, the
// runner's state_directory), or "" without one.
func stateDir() string {
	d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	if d == "" {
		return ""
	}
	return filepath.Join(d, "recordings")
}

// parseSize reads 123, 10K, 5M, 2G (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "T"):
		mult, s = 1<<40, strings.TrimSuffix(s, "T")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q: want a number with an optional K, M, G or T", s)
	}
	return n * mult, nil
}
