// Command sluice-hangup ends shell sessions for ptystore: the one sluice
// helper that may signal other users' processes. See package
// sluice/helpers/hangup.
package main

import (
	"errors"
	"flag"
	"time"

	"sluice/helpers/hangup"
	"sluice/internal/confine"
	"sluice/internal/helper"
	"sluice/internal/sessioncg"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
)

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	grace := flag.Duration("grace", 2*time.Second, "time between SIGHUP and SIGKILL")
	recordGrace := flag.Duration("record-grace", time.Second, "time between SIGHUP and SIGKILL for a recorded shell (\"record to hangup\"); below --grace, so the shell's session is gone before ptystore's hangup SIGKILLs the recorder waiting for it")
	cgroups := flag.String("session-cgroups", sessioncg.Root(), "directory of the per-session cgroups sluice makes (default $"+sessioncg.Env+"; empty: none)")
	flag.Parse()
	log := helper.Logger(msg.Hangup)

	if *recordGrace >= *grace {
		log.Warn("hangup: --record-grace is not below --grace: a recorded shell's processes that ignore SIGHUP may outlive `sessions end`", "grace", *grace, "record_grace", *recordGrace)
	}
	h := &hangup.Handler{
		PtyStore: hangup.Config{Grace: *grace, Cgroups: *cgroups, Log: log},
		Record:   hangup.Config{Grace: *recordGrace, Cgroups: *cgroups, Log: log},
	}
	var routes []rpc.Route
	for i, t := range h.Tables() {
		r, err := f.Routes(msg.Hangup, t)
		if errors.Is(err, buildid.ErrNotInManifest) && i > 0 {
			// A suite built without the recording helper (its manifest
			// has no build ID for it): ptystore's route alone.
			log.Warn("hangup: no recording helper in the build manifest", "protocol", t.Protocol, "err", err)
			continue
		}
		if err != nil {
			helper.Fatal(log, "routes", err)
		}
		routes = append(routes, r...)
	}
	// /proc for who is in the session; logind's session records and the
	// cgroup tree for the logind scope a shell under systemd sits in
	// (each call is a fresh process, so the session's record exists).
	p := confine.Profile{Name: msg.Hangup, Signal: true, Read: []string{"/proc", "/run/systemd/sessions"}, Listen: f.Listen}
	if mount, err := sessioncg.Mount(); err == nil {
		p.Read = append(p.Read, mount)
	}
	if *cgroups != "" {
		p.Write = []string{*cgroups}
	}
	confine.Helper(log, p)
	ctx, cancel := helper.Context()
	defer cancel()
	if err := f.Serve(ctx, f.Server(msg.Hangup, log, routes...), rpc.ActivationFiles()); err != nil {
		helper.Fatal(log, "serve", err)
	}
}
