// Command sluice-shell is the shell helper: it opens login shells for the
// policy helper and hands back the pty master. See package sluice/helpers/shell.
package main

import (
	"context"
	"flag"
	"os"

	"sluice/helpers/shell"
	"sluice/internal/confine"
	"sluice/internal/helper"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	backend := flag.String("backend", shell.BackendAuto, "how shells are opened: machined (systemd-machined over D-Bus), embedded (own pty and fork, host only), or auto (machined when booted with systemd, else embedded)")
	bus := flag.String("dbus-address", "", "D-Bus address for the machined backend (default: the system bus)")
	flag.Parse()
	log := helper.Logger(msg.Shell)

	b, kind, err := shell.NewBackend(*backend, *bus, log)
	if err != nil {
		helper.Fatal(log, "backend", err)
	}
	h := &shell.Handler{Backend: b, Log: log, Recorder: recorder}
	routes, err := f.Routes(msg.Shell, h.Tables()...)
	if err != nil {
		helper.Fatal(log, "routes", err)
	}
	if f.Listen != "" {
		// Long-running: say once which backend serves. Per-call instances
		// (Accept=yes) would repeat it on every call.
		log.Info("shell: serving", "backend", kind, "socket", f.Listen)
	}
	if kind == shell.BackendMachined {
		// The embedded backend execs login shells, which would inherit
		// the filter and no_new_privs (no sudo in them): only the machined
		// backend, where machined starts the shell, confines itself.
		// No Pty: it opens no pty (a recorded session's outer pty was
		// made here until the recorder answered with a socket).
		confine.Helper(log, confine.Profile{Name: msg.Shell, Listen: f.Listen})
	}
	ctx, cancel := helper.Context()
	defer cancel()
	if err := f.Serve(ctx, f.Server(msg.Shell, log, routes...), rpc.ActivationFiles()); err != nil {
		helper.Fatal(log, "serve", err)
	}
}

// recorder calls the recording helper and returns the session socket it
// answers with; the client is made per call, so a suite without one
// starts, and a rule that records fails closed.
func recorder(ctx context.Context, a msg.RecordSession, inner *os.File) (*os.File, error) {
	cl, err := suite.Client(msg.Shell, msg.ProtoShellToRecord)
	if err != nil {
		return nil, err
	}
	// The call fails unless the reply carries exactly the session socket.
	_, fds, err := optable.Call[msg.RecordSessionReply](ctx, cl, msg.OpRecordSession, a, []*os.File{inner}, 1)
	if err != nil {
		return nil, err
	}
	return fds[0], nil
}
