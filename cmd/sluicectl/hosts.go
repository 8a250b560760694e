package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"sluice/helpers/fleet"
	"sluice/internal/hostgrant"
	"sluice/msg"
)

const hostsSynopsis = `hosts list [--json]
       hosts add [--port N] [--user RELAY] [--relay PATH] (--host-key "TYPE BASE64" | --host-key-file FILE) NAME ADDRESS
       hosts check NAME
       hosts remove NAME
  (all: --fleet-dir DIR, default $SLUICE_FLEET_DIR or ` + fleet.DefaultDir + `)`

// runHosts manages the gateway's fleet: hosts.json and the pinned host
// keys in the fleet directory, which the fleet helper reads per call.
func runHosts(ctx context.Context, g *globals, args []string) error {
	fs := flags("hosts", hostsSynopsis, g)
	asJSON := fs.Bool("json", false, "print JSON (list)")
	dir := fs.String("fleet-dir", envOr("SLUICE_FLEET_DIR", fleet.DefaultDir), "the fleet helper's directory")
	port := fs.Int("port", 22, "the host's sshd port (add)")
	relayUser := fs.String("user", fleet.DefaultUser, "the relay account on the host (add)")
	relayPath := fs.String("relay", "/usr/libexec/sluice/sluice-relay", "sluice-relay on the host, for the forced command (add)")
	hostKey := fs.String("host-key", "", "the host's sshd public key, \"ssh-ed25519 AAAA...\", from the host itself (add)")
	hostKeyFile := fs.String("host-key-file", "", "a file holding it, e.g. a copy of the host's /etc/ssh/ssh_host_ed25519_key.pub (add)")
	gatewayPub := fs.String("gateway-pub", "", "the gateway's public key file, instead of asking auth's gateway-key (add)")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, rest); err != nil {
		return err
	}
	if verb == "" {
		verb = "list"
	}
	switch verb {
	case "list":
		hs, err := fleet.LoadHosts(*dir)
		if err != nil {
			return err
		}
		if *asJSON {
			if hs.Hosts == nil {
				hs.Hosts = []msg.FleetHost{}
			}
			return printJSON(g.out, hs.Hosts)
		}
		pins, _ := readPins(*dir)
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tADDRESS\tPORT\tRELAY USER\tHOST KEY")
		for _, h := range hs.Hosts {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", h.Name, h.Address, h.Port, h.User, pinOf(pins, h.Name))
		}
		return tw.Flush()
	case "add":
		if fs.NArg() != 2 {
			return usageErr("want: hosts add [flags] NAME ADDRESS")
		}
		h := msg.FleetHost{Name: fs.Arg(0), Address: fs.Arg(1), Port: *port, User: *relayUser}
		if err := fleet.ValidHost(h); err != nil {
			return usageErr("%v", err)
		}
		key := *hostKey
		if *hostKeyFile != "" {
			b, err := os.ReadFile(*hostKeyFile)
			if err != nil {
				return err
			}
			key = string(b)
		}
		kf := strings.Fields(key)
		if len(kf) < 2 || !strings.HasPrefix(kf[0], "ssh-") && !strings.HasPrefix(kf[0], "ecdsa-") {
			return usageErr("want the host's public key (--host-key or --host-key-file): the pin is what keeps the gateway from talking to an impostor")
		}
		pub, err := gatewayKey(ctx, g, *gatewayPub)
		if err != nil {
			return err
		}
		sshPub, err := os.ReadFile(filepath.Join(*dir, fleet.KeyFile+".pub"))
		if err != nil {
			return fmt.Errorf("the fleet helper's SSH key (it makes one at its first start): %w", err)
		}
		hs, err := fleet.LoadHosts(*dir)
		if err != nil {
			return err
		}
		hs.Hosts = slices.DeleteFunc(hs.Hosts, func(x msg.FleetHost) bool { return x.Name == h.Name })
		hs.Hosts = append(hs.Hosts, h)
		if err := setPin(*dir, h.Name, kf[0]+" "+kf[1]); err != nil {
			return err
		}
		if err := hs.Save(*dir); err != nil {
			return err
		}
		fmt.Fprintf(g.out, `added %s (%s port %d), host key pinned: %s
On %s, as root:
  1. the relay account:
       useradd --system --home-dir / --shell /bin/sh %s && usermod -p '*' %s
  2. its only key (its authorized_keys, e.g. /etc/ssh/authorized_keys/%s with AuthorizedKeysFile naming it):
       restrict,command="%s --host %s" %s
  3. the gateway's public key, as /etc/sluice/gateway.pub:
       %s
  4. sluice-policy and sluice-ptystore get:
       --fleet-host %s --gateway-key /etc/sluice/gateway.pub
       --allow "gateway to policy=user:%s"   (policy)
       --allow "gateway to ptystore=user:%s" (ptystore)
     and %s may connect to policy.sock and ptystore.sock (docs/fleet.md).
     Optional: ptystore's --gateway-admin lets this gateway's admins list
     and end the host's sessions (sluicectl sessions, sessions end HOST/ID).
Then: sluicectl hosts check %s
`, h.Name, h.Address, h.Port, kf[0], h.Name, h.User, h.User, h.User, *relayPath, h.Name, strings.TrimSpace(string(sshPub)),
			strings.TrimSpace(hostgrant.FormatPublic(pub)), h.Name, h.User, h.User, h.User, h.Name)
		return nil
	case "remove":
		if fs.NArg() != 1 {
			return usageErr("want: hosts remove NAME")
		}
		hs, err := fleet.LoadHosts(*dir)
		if err != nil {
			return err
		}
		n := len(hs.Hosts)
		hs.Hosts = slices.DeleteFunc(hs.Hosts, func(x msg.FleetHost) bool { return x.Name == fs.Arg(0) })
		if len(hs.Hosts) == n {
			return errNotFound{fmt.Errorf("no host %q", fs.Arg(0))}
		}
		if err := hs.Save(*dir); err != nil {
			return err
		}
		if err := setPin(*dir, fs.Arg(0), ""); err != nil {
			return err
		}
		fmt.Fprintf(g.out, "removed %s and its pinned host key\n", fs.Arg(0))
		return nil
	case "check":
		if fs.NArg() != 1 {
			return usageErr("want: hosts check NAME")
		}
		var rep msg.FleetCheckReply
		if _, err := request(ctx, g, msg.ProtoAdminToFleet, msg.OpFleetCheck, msg.FleetCheck{Host: fs.Arg(0)}, &rep, 0); err != nil {
			return err
		}
		if rep.RelayHost != rep.Host {
			return fmt.Errorf("%s: the relay there says it is %q: its forced command's --host is wrong", rep.Host, rep.RelayHost)
		}
		fmt.Fprintf(g.out, "%s: relay reached over ssh, host key as pinned, %d ms\n", rep.Host, rep.ElapsedMs)
		return nil
	}
	return usageErr("unknown hosts verb %q (list, add, check, remove)", verb)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func gatewayKey(ctx context.Context, g *globals, file string) (ed25519.PublicKey, error) {
	if file != "" {
		return hostgrant.LoadPublic(file)
	}
	var rep msg.GatewayKeyReply
	if _, err := request(ctx, g, msg.ProtoAdminToAuth, msg.OpGatewayKey, msg.GatewayKey{}, &rep, 0); err != nil {
		return nil, fmt.Errorf("the gateway's key from auth (sluice-auth --host-grant-key): %w", err)
	}
	if len(rep.Public) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("auth's gateway key has %d bytes", len(rep.Public))
	}
	return ed25519.PublicKey(rep.Public), nil
}

// readPins reads known_hosts: NAME TYPE KEY per line.
func readPins(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, fleet.KnownHostsFile))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n"), nil
}

func pinOf(pins []string, name string) string {
	for _, l := range pins {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
			return f[1]
		}
	}
	return "NONE (unreachable until pinned)"
}

// setPin replaces name's line in known_hosts (none when line is "").
func setPin(dir, name, key string) error {
	pins, _ := readPins(dir)
	var out []string
	for _, l := range pins {
		if f := strings.Fields(l); len(f) > 0 && f[0] != name {
			out = append(out, l)
		}
	}
	if key != "" {
		out = append(out, name+" "+key)
	}
	p := filepath.Join(dir, fleet.KnownHostsFile)
	tmp := p + ".tmp"
	text := strings.Join(out, "\n")
	if text != "" {
		text += "\n"
	}
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
