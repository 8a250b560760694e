// Command sluice-fleet is the gateway's fleet helper: it holds the SSH
// client key and reaches each host's relay account through the host's
// sshd. See package sluice/helpers/fleet and docs/fleet.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"sluice/helpers/fleet"
	"sluice/internal/helper"
	"sluice/msg"
	"sluice/rpc"
)

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	dir := flag.String("dir", "", "the fleet directory: hosts.json, known_hosts, the SSH key id_ed25519 (default $STATE_DIRECTORY, else "+fleet.DefaultDir+")")
	ssh := flag.String("ssh", "ssh", "OpenSSH's ssh client")
	maxStreams := flag.Int("max-streams", 512, "remote sessions streaming at once")
	flag.Parse()
	log := helper.Logger(msg.Fleet)
	// An ssh connection takes longer than a local call; unless told, a
	// call may take up to 20 s.
	timeoutSet := false
	flag.Visit(func(fl *flag.Flag) { timeoutSet = timeoutSet || fl.Name == "timeout" })
	if !timeoutSet {
		f.Timeout = 20 * time.Second
	}
	d := *dir
	if d == "" {
		d = os.Getenv("STATE_DIRECTORY")
	}
	if d == "" {
		d = fleet.DefaultDir
	}
	if err := ensureKey(d); err != nil {
		helper.Fatal(log, "ssh key", err)
	}
	fl := &fleet.Fleet{Dir: d, SSH: *ssh, Log: log, Timeout: f.Timeout - 2*time.Second, MaxStreams: *maxStreams}
	routes, err := f.Routes(msg.Fleet, fl.Tables()...)
	if err != nil {
		helper.Fatal(log, "routes", err)
	}
	// Not confined by seccomp or Landlock: ssh, its child, inherits both,
	// and needs the network and its libraries. Its confinement is its own
	// user, which alone reads the key (docs/fleet.md).
	ctx, cancel := helper.Context()
	defer cancel()
	if err := f.Serve(ctx, f.Server(msg.Fleet, log, routes...), rpc.ActivationFiles()); err != nil {
		helper.Fatal(log, "serve", err)
	}
}

// ensureKey makes the fleet's SSH key with OpenSSH's ssh-keygen when
// there is none: only this helper's user can read it.
func ensureKey(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key := filepath.Join(dir, fleet.KeyFile)
	if _, err := os.Stat(key); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	host, _ := os.Hostname()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sluice-fleet@"+host, "-f", key).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	return nil
}
