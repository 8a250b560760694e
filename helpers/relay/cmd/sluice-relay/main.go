// Command sluice-relay is the forced command of a fleet host's relay
// account (authorized_keys: restrict,command="sluice-relay --host
// NAME"): one call from the gateway to this host's policy or ptystore per
// ssh session. See package sluice/helpers/relay and docs/fleet.md.
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"time"

	"sluice/helpers/relay"
	"sluice/internal/names"
	"sluice/journal"
	"sluice/msg"
	"sluice/suite"
)

func main() {
	host := flag.String("host", "", "this host's name in the fleet, as the gateway's hosts add gave it")
	runtimeDir := flag.String("runtime-dir", "", "the suite's runtime directory (default $SLUICE_RUNTIME_DIR, else "+suite.DefaultRuntimeDir+")")
	logFile := flag.String("log", "", "append the log here (default: the journal if there is one, else nowhere: stdout and stderr are the ssh channel)")
	flag.Parse()
	log := logger(*logFile)
	if !names.Machine(*host) || *host == msg.HostMachine {
		log.Error("relay: --host missing or invalid", "host", *host)
		os.Exit(2)
	}
	if *runtimeDir != "" {
		os.Setenv("SLUICE_RUNTIME_DIR", *runtimeDir)
	}
	// The whole session's setup (not its stream) is bounded.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &relay.Relay{
		Host: *host, In: os.Stdin, Out: os.Stdout, Log: log,
		Policy: func() (relay.Caller, error) {
			cl, err := suite.Client(msg.Relay, msg.ProtoGatewayToPolicy)
			if err == nil {
				cl.Timeout = 30 * time.Second
			}
			return cl, err
		},
		PtyStore: func() (relay.Caller, error) {
			cl, err := suite.Client(msg.Relay, msg.ProtoGatewayToPtyStore)
			return cl, err
		},
	}
	if err := r.Run(ctx); err != nil {
		log.Warn("relay: ended", "err", err)
		os.Exit(1)
	}
}

func logger(path string) *slog.Logger {
	var fallback slog.Handler = slog.NewTextHandler(io.Discard, nil)
	if path != "" {
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			fallback = slog.NewTextHandler(f, nil)
		}
	}
	if path == "" {
		if j, err := journal.New(journal.Socket, "sluice-relay", nil, fallback); err == nil {
			return slog.New(j).With("helper", msg.Relay)
		}
	}
	return slog.New(fallback).With("helper", msg.Relay)
}
