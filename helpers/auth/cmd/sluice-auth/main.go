// Command sluice-auth is the passkey helper: WebAuthn registration and
// login for the frontend, enrollment tokens for admins, grants on success.
package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sluice/helpers/auth"
	"sluice/helpers/auth/seal"
	"sluice/helpers/auth/store"
	"sluice/internal/confine"
	"sluice/internal/grant"
	"sluice/internal/helper"
	"sluice/internal/hostgrant"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	var origins listFlag
	stateDir := flag.String("state-dir", "", "state directory holding auth.db and seal.key (default $STATE_DIRECTORY)")
	grantKey := flag.String("grant-key", helper.Credential("grant.key"), "grant key file, 32 bytes (default $CREDENTIALS_DIRECTORY/grant.key)")
	sealKey := flag.String("seal-key", "", "ceremony seal key file (default $CREDENTIALS_DIRECTORY/seal.key if present, else STATE_DIR/seal.key, created)")
	rpID := flag.String("rp-id", "localhost", "WebAuthn relying party ID")
	rpName := flag.String("rp-name", "sluice", "relying party name shown by authenticators")
	flag.Var(&origins, "origin", "allowed origin (repeatable; default http://localhost:8080)")
	grantLife := flag.Duration("grant-lifetime", grant.DefaultLifetime, "lifetime of a login grant")
	enrollTTL := flag.Duration("enroll-ttl", auth.DefaultEnrollTTL, "default lifetime of an enrollment token")
	ceremonyTTL := flag.Duration("ceremony-ttl", auth.DefaultCeremonyTTL, "time allowed between a ceremony's begin and finish")
	admins := flag.String("admins", "", "callers who may enroll, checked on top of --allow 'admin to auth=...': uid:N,user:NAME,gid:N,group:NAME (uid 0 always; default: also this helper's own uid)")
	reserve := flag.Int64("reserve", 1<<20, "bytes kept allocated past the database end so sign-ins work on a full disk")
	minFree := flag.Int64("min-free", 1<<20, "free bytes the state file system needs for an enrollment or registration")
	revocationDir := flag.String("revocation-dir", "", "directory to publish the revocation list in for policy, ptystore and the frontend ("+revoke.DefaultDir+" under systemd); empty: not published")
	hostKey := flag.String("host-grant-key", "", "Ed25519 seed file that signs host grants for a fleet (created 0600 when missing; docs/fleet.md); empty: no fleet")
	lockTimeout := flag.Duration("lock-timeout", 3*time.Second, "longest wait for the credential database another instance holds; past it the call is answered busy")
	flag.Parse()
	log := helper.Logger(msg.Auth)
	if len(origins) == 0 {
		origins = listFlag{"http://localhost:8080"}
	}

	dir := auth.StateDir(*stateDir)
	if dir == "" {
		helper.Fatal(log, "no state directory", errors.New("set --state-dir or $STATE_DIRECTORY"))
	}
	if *grantKey == "" {
		helper.Fatal(log, "no grant key", errors.New("set --grant-key or $CREDENTIALS_DIRECTORY with grant.key"))
	}
	gk, err := grant.LoadKey(*grantKey)
	if err != nil {
		helper.Fatal(log, "grant key", err)
	}
	sk, err := loadSealKey(*sealKey, dir)
	if err != nil {
		helper.Fatal(log, "seal key", err)
	}
	var hk ed25519.PrivateKey
	if *hostKey != "" {
		if hk, err = hostgrant.LoadOrCreateKey(*hostKey); err != nil {
			helper.Fatal(log, "host grant key", err)
		}
	}
	adminAllow := rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}}
	if *admins != "" {
		if adminAllow, err = helper.ParseAllow(*admins); err != nil {
			helper.Fatal(log, "--admins", err)
		}
	}
	// Opened per operation, in the handler: instances (Accept=yes, one per
	// call) share the database and must not hold its lock for longer
	// than a transaction.
	st := store.NewLazy(dir, store.Options{Reserve: *reserve, MinFree: *minFree, LockTimeout: *lockTimeout}, log)
	svc, err := auth.New(auth.Config{
		RPID: *rpID, RPName: *rpName, Origins: origins,
		GrantKey: gk, SealKey: sk,
		GrantLifetime: *grantLife, EnrollTTL: *enrollTTL, CeremonyTTL: *ceremonyTTL,
		Admins: adminAllow, RevocationDir: *revocationDir, Log: log, HostKey: hk,
	}, st)
	if err != nil {
		helper.Fatal(log, "config", err)
	}
	if err := svc.PublishIfMissing(); err != nil {
		// Not fatal: the call this process serves may not need it, and
		// the checkers refuse every grant until a list is there.
		log.Error("auth: revocation list missing and not published", "err", err)
	}

	routes, err := f.Routes(msg.Auth, svc.Tables()...)
	if err != nil {
		helper.Fatal(log, "routes", err)
	}
	write := []string{dir}
	if *revocationDir != "" {
		write = append(write, *revocationDir)
	}
	confine.Helper(log, confine.Profile{Name: msg.Auth, Write: write, Listen: f.Listen})
	ctx, cancel := helper.Context()
	defer cancel()
	if err := f.Serve(ctx, f.Server(msg.Auth, log, routes...), rpc.ActivationFiles()); err != nil {
		helper.Fatal(log, "serve", err)
	}
}

// loadSealKey prefers a key systemd passed as a credential; otherwise the
// helper keeps its own in the state directory, made on first start.
func loadSealKey(flagValue, dir string) ([]byte, error) {
	if flagValue != "" {
		return seal.LoadOrCreateKey(flagValue)
	}
	if p := helper.Credential("seal.key"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return seal.LoadOrCreateKey(p)
		}
	}
	return seal.LoadOrCreateKey(filepath.Join(dir, "seal.key"))
}

func init() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: sluice-auth [flags]\n\nServes %q and %q on activation fds or --listen.\n\n",
			msg.ProtoWebToAuth, msg.ProtoAdminToAuth)
		flag.PrintDefaults()
	}
}
