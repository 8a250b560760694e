// Command sluice-ptystore holds live pty masters for the frontend so shell
// sessions outlive frontend restarts and its own: every master is also in
// the service's fd store and comes back as an activation fd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/ptystore"
	"sluice/internal/confine"
	"sluice/internal/gateway"
	"sluice/internal/grant"
	"sluice/internal/helper"
	"sluice/internal/optable"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
	"sluice/sdnotify"
	"sluice/suite"
)

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	grantKey := flag.String("grant-key", helper.Credential("grant.key"), "grant key file (default $CREDENTIALS_DIRECTORY/grant.key)")
	maxSessions := flag.Int("max-sessions", 1024, "sessions held in all")
	maxPerUser := flag.Int("max-per-user", 64, "sessions held per sluice user")
	revocationDir := flag.String("revocation-dir", "", "directory of the revocation list auth publishes ("+revoke.DefaultDir+" under systemd), checked on every call; empty: no revocation check")
	grace := flag.Duration("hangup-grace", time.Second, "how long a pty must stay hung up before its session is dropped")
	hangupVia := flag.String("hangup", "helper", "how a dropped session's shell is ended: helper (the hangup helper's socket, "+
		"the only way that reaches a shell another process holds a copy of) or off (signal it ourselves where we may; development only)")
	policyFile := flag.String("policy-file", "/etc/sluice/policy", "the policy file to watch: when it changes, every live session is checked again (\"\": only when sluicectl says so)")
	policyPoll := flag.Duration("policy-poll", 500*time.Millisecond, "how often the policy file's identity is looked at")
	var fleet gateway.Flags
	fleet.Register(flag.CommandLine)
	gatewayAdmin := flag.Bool("gateway-admin", false, "with --fleet-host: let the fleet gateway's admins (an admin host grant from its auth) list this host's sessions and end one, as sluicectl sessions does here")
	verdictTTL := flag.Duration("verdict-ttl", ptystore.DefaultVerdictTTL, "how long policy's allow of an attach is reused while the --policy-file is unchanged (0: ask policy on every attach); the grant and the revocation list are checked on every call regardless")
	limitsEvery := flag.Duration("limits-every", 500*time.Millisecond, "how often sessions are checked against their maximum length and detached limit")
	recorders := flag.String("recorders", os.Getenv("SLUICE_RECORDERS"), "`SPEC` (as --allow's) of who may have made a recorded session's socket: the recording helper's uid or group (default $SLUICE_RECORDERS, else this helper's own uid only)")
	flag.Parse()
	// A line per call: batched, so the runner is not woken per call.
	log, flushLog := helper.BatchedLogger(msg.PtyStore, helper.DefaultLogDelay)
	defer flushLog()

	if *grantKey == "" {
		helper.Fatal(log, "no grant key", errors.New("set --grant-key or $CREDENTIALS_DIRECTORY with grant.key"))
	}
	key, err := grant.LoadKey(*grantKey)
	if err != nil {
		helper.Fatal(log, "grant key", err)
	}
	var notify ptystore.Notifier
	if sdnotify.Socket() != "" {
		notify = sdnotify.Notify
	} else {
		log.Warn("ptystore: no NOTIFY_SOCKET, so no fd store: sessions will not survive a restart")
	}
	var hang func(context.Context, *os.File) error
	switch *hangupVia {
	case "helper":
		args, err := msgpack.Marshal(msg.HangupSession{})
		if err != nil {
			helper.Fatal(log, "hangup args", err)
		}
		// The client is made per drop, so a suite without the hangup
		// helper still starts, and its drops fail, saying why.
		hang = func(ctx context.Context, master *os.File) error {
			cl, err := suite.Client(msg.PtyStore, msg.ProtoPtyStoreToHangup)
			if err != nil {
				return err
			}
			var rep msg.HangupSessionReply
			if _, err := cl.Call(ctx, msg.Request{Op: msg.OpHangup, Args: args}, []*os.File{master}, &rep); err != nil {
				return err
			}
			log.Info("ptystore: hung up", "sid", rep.SID, "hungup", rep.Hungup, "killed", rep.Killed, "cgroup", rep.Cgroup, "elapsed_ms", rep.Elapsed)
			return nil
		}
	case "off":
		log.Warn("ptystore: --hangup off: a dropped session's shell ends only if no one else holds its pty")
	default:
		helper.Fatal(log, "--hangup", fmt.Errorf("want helper or off, got %q", *hangupVia))
	}
	var madeBy *rpc.Allow
	if *recorders != "" {
		a, err := helper.ParseAllow(*recorders)
		if err != nil {
			helper.Fatal(log, "recorders", err)
		}
		madeBy = &a
	}
	st, err := ptystore.New(ptystore.Config{
		MaxSessions: *maxSessions, MaxPerUser: *maxPerUser, HangupGrace: *grace,
		Notify: notify, Log: log, Hangup: hang, Recorders: madeBy,
	})
	if err != nil {
		helper.Fatal(log, "store", err)
	}
	defer st.Close()
	stored, sockets := rpc.SplitFiles(rpc.ActivationFiles(), ptystore.FDNamePrefix)
	st.Adopt(stored)
	h := ptystore.NewHandler(st, key)
	var read []string
	if *revocationDir != "" {
		h.Revoked = revoke.NewChecker(*revocationDir)
		read = append(read, *revocationDir)
	} else {
		log.Warn("ptystore: no --revocation-dir: revoked grants are accepted until they expire")
	}
	// The client is made per call, as for hangup: a suite without the
	// policy helper still starts, and refuses every attach, saying why.
	h.Policy = func(ctx context.Context, a msg.CheckSessions) (msg.CheckSessionsReply, error) {
		var rep msg.CheckSessionsReply
		cl, err := suite.Client(msg.PtyStore, msg.ProtoPtyStoreToPolicy)
		if err != nil {
			return rep, err
		}
		args, err := msgpack.Marshal(a)
		if err != nil {
			return rep, err
		}
		_, err = cl.Call(ctx, msg.Request{Op: msg.OpCheckSessions, Args: args}, nil, &rep)
		return rep, err
	}
	h.Audit = func(ctx context.Context, a msg.AuditScope) (msg.AuditScopeReply, error) {
		var rep msg.AuditScopeReply
		cl, err := suite.Client(msg.PtyStore, msg.ProtoPtyStoreToPolicy)
		if err != nil {
			return rep, err
		}
		args, err := msgpack.Marshal(a)
		if err != nil {
			return rep, err
		}
		_, err = cl.Call(ctx, msg.Request{Op: msg.OpAuditScope, Args: args}, nil, &rep)
		return rep, err
	}

	tables := h.Tables()
	ad, err := fleet.Adapter(key, gateway.PtyStoreOps, log)
	if err != nil {
		helper.Fatal(log, "fleet", err)
	}
	if *gatewayAdmin && ad == nil {
		helper.Fatal(log, "fleet", errors.New("--gateway-admin goes with --fleet-host and --gateway-key"))
	}
	if ad != nil {
		if *gatewayAdmin {
			ad.Admin, _ = optable.Find(tables, msg.ProtoAdminToPtyStore)
		}
		// The relay gets, lists, drops and shares as the frontend does;
		// it puts nothing: the host's policy put every session it opened.
		web, _ := optable.Find(tables, msg.ProtoWebToPtyStore)
		tables = append(tables, ad.Table(msg.ProtoGatewayToPtyStore, web))
	}
	routes, err := f.Routes(msg.PtyStore, tables...)
	if err != nil {
		helper.Fatal(log, "routes", err)
	}
	// Signal only with --hangup off: ending shells is the hangup helper's.
	confine.Helper(log, confine.Profile{Name: msg.PtyStore, Read: read, Signal: hang == nil, Listen: f.Listen})
	srv := f.Server(msg.PtyStore, log, routes...)
	// Policy's puts and the admin's calls get connection slots of their
	// own: the frontend may hold all --max-conns of the others, and a put
	// found busy leaves a session no end reaches, an end found busy ends
	// nothing (tests/e2e TestCreateWhilePtyStoreFull).
	for _, proto := range []string{msg.ProtoPolicyToPtyStore, msg.ProtoAdminToPtyStore} {
		p, ok := msg.Lookup(proto)
		if !ok {
			continue
		}
		for _, r := range routes {
			if r.Client.Intent == msg.Intent(p, "client") {
				srv.Reserved.UIDs = append(srv.Reserved.UIDs, r.Allow.UIDs...)
				srv.Reserved.GIDs = append(srv.Reserved.GIDs, r.Allow.GIDs...)
			}
		}
	}
	ctx, cancel := helper.Context()
	defer cancel()
	if *policyFile != "" {
		// Only with the file to watch: a verdict is kept only as long as
		// the file policy decided on is unchanged.
		if *verdictTTL > 0 {
			h.Verdicts = &ptystore.VerdictCache{Path: *policyFile, TTL: *verdictTTL, Racy: ptystore.DefaultVerdictRacy}
		}
		go h.WatchPolicy(ctx, *policyFile, *policyPoll)
	}
	if *limitsEvery > 0 {
		go h.EnforceLimits(ctx, *limitsEvery)
	}

	// READY=1 once the socket is there: with --listen we make it first;
	// an activation socket already queues connections.
	if f.Listen != "" {
		l, err := rpc.Listen(f.Listen, os.FileMode(f.Mode))
		if err != nil {
			helper.Fatal(log, "listen", err)
		}
		ready(log, notify)
		err = srv.Serve(ctx, l)
		l.Close()
		if err != nil {
			helper.Fatal(log, "serve", err)
		}
		return
	}
	if len(sockets) == 0 {
		helper.Fatal(log, "serve", errors.New("no socket passed (LISTEN_FDS unset); use --listen PATH"))
	}
	ready(log, notify)
	if err := rpc.ServeFiles(ctx, srv, sockets); err != nil {
		helper.Fatal(log, "serve", err)
	}
}

func ready(log *slog.Logger, notify ptystore.Notifier) {
	log.Info("ptystore: serving")
	if notify != nil {
		if err := notify("READY=1"); err != nil {
			log.Info("ptystore: READY=1 not sent", "err", err)
		}
	}
}
