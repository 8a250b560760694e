package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/names"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

// localHost names this host's own sessions in the HOST column: ".host"
// is never a fleet host's name (fleet.ValidHost).
const localHost = msg.HostMachine

// hostSession is one row of the fleet-wide list: a session, or a host
// that did not answer (Error).
type hostSession struct {
	Host  string `json:"host"`
	Error string `json:"error,omitempty"`
	*msg.SessionInfo
}

func runSessions(ctx context.Context, g *globals, args []string) error {
	fs := flags("sessions", "sessions [list] [--host NAME] [--json] | sessions end [--host NAME] [HOST/]ID", g)
	asJSON := fs.Bool("json", false, "print JSON")
	host := fs.String("host", "", "only this host of the fleet ("+localHost+": this one); default every host")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, rest); err != nil {
		return err
	}
	if verb == "" {
		verb = "list"
	}
	if *host != "" && !names.Machine(*host) {
		return usageErr("invalid host %q", *host)
	}
	switch verb {
	case "list":
		if fs.NArg() > 0 {
			return usageErr("list takes no arguments")
		}
		rows, failed, err := listSessions(ctx, g, *host)
		if err != nil {
			return err
		}
		if *asJSON {
			if rows == nil {
				rows = []hostSession{}
			}
			if err := printJSON(g.out, rows); err != nil {
				return err
			}
		} else {
			if err := printSessions(g.out, rows); err != nil {
				return err
			}
		}
		if failed > 0 {
			return errSilent // listed with their errors above
		}
		return nil
	case "end":
		if fs.NArg() != 1 {
			return usageErr("want: sessions end [--host NAME] [HOST/]ID")
		}
		on, id := *host, fs.Arg(0)
		if h, rest, ok := strings.Cut(id, "/"); ok {
			if on != "" && on != h {
				return usageErr("--host %s and %s/ name two hosts", on, h)
			}
			on, id = h, rest
			if !names.Machine(on) {
				return usageErr("invalid host %q", on)
			}
		}
		if on == "" || on == localHost {
			var rep msg.PtyDropReply
			if _, err := request(ctx, g, msg.ProtoAdminToPtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: id}, &rep, 0); err != nil {
				return err
			}
		} else if err := remoteAdmin(ctx, g, on, msg.OpPtyDrop, msg.PtyDrop{ID: id}, &msg.PtyDropReply{}); err != nil {
			return err
		}
		ended := id
		if on != "" && on != localHost {
			ended = on + "/" + id
		}
		if *asJSON {
			return printJSON(g.out, map[string]any{"ended": ended})
		}
		fmt.Fprintf(g.out, "ended %s\n", ended)
		return nil
	}
	return usageErr("unknown sessions verb %q (list, end)", verb)
}

// listSessions lists this host's sessions and, on a gateway, every fleet
// host's (only host's, if named), asking the hosts at once. A host that
// does not answer is a row with its error, counted in failed; this
// host's own ptystore not answering is an error, as before the fleet.
func listSessions(ctx context.Context, g *globals, host string) (rows []hostSession, failed int, err error) {
	if host == "" || host == localHost {
		var rep msg.PtyListReply
		if _, err := request(ctx, g, msg.ProtoAdminToPtyStore, msg.OpPtyList, msg.PtyList{}, &rep, 0); err != nil {
			return nil, 0, err
		}
		for i := range rep.Sessions {
			rows = append(rows, hostSession{Host: localHost, SessionInfo: &rep.Sessions[i]})
		}
		if host == localHost {
			return rows, 0, nil
		}
	}
	hosts, err := fleetHosts(ctx, g)
	if err != nil {
		if host == "" && errors.Is(err, errNoFleet) {
			return rows, 0, nil // a single host
		}
		return nil, 0, err
	}
	if host != "" {
		found := false
		for _, h := range hosts {
			found = found || h == host
		}
		if !found {
			return nil, 0, errNotFound{fmt.Errorf("no host %q in the fleet (sluicectl hosts list)", host)}
		}
		hosts = []string{host}
	}
	per := make([][]hostSession, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rep msg.PtyListReply
			if err := remoteAdmin(ctx, g, h, msg.OpPtyList, msg.PtyList{}, &rep); err != nil {
				per[i] = []hostSession{{Host: h, Error: err.Error()}}
				return
			}
			for j := range rep.Sessions {
				per[i] = append(per[i], hostSession{Host: h, SessionInfo: &rep.Sessions[j]})
			}
		}()
	}
	wg.Wait()
	for _, p := range per {
		for _, r := range p {
			if r.Error != "" {
				failed++
			}
		}
		rows = append(rows, p...)
	}
	return rows, failed, nil
}

var errNoFleet = errors.New("this host is no fleet gateway (no fleet.sock)")

// fleetHosts asks the fleet helper for the host names; errNoFleet when
// this host runs none.
func fleetHosts(ctx context.Context, g *globals) ([]string, error) {
	if _, err := os.Stat(suite.SocketPath(msg.Fleet)); errors.Is(err, os.ErrNotExist) {
		return nil, errNoFleet
	}
	var rep msg.FleetHostsReply
	if _, err := request(ctx, g, msg.ProtoAdminToFleet, msg.OpFleetHosts, msg.FleetHosts{}, &rep, 0); err != nil {
		return nil, fmt.Errorf("the fleet's hosts: %w", err)
	}
	out := make([]string, 0, len(rep.Hosts))
	for _, h := range rep.Hosts {
		out = append(out, h.Name)
	}
	return out, nil
}

// remoteAdmin makes one admin call to host's ptystore: an admin host
// grant from this gateway's auth (which checks, from the kernel, that we
// are an admin), carried by the fleet helper through the host's relay.
// The host decides: its ptystore takes it only with --gateway-admin.
func remoteAdmin(ctx context.Context, g *globals, host, op string, args, reply any) error {
	var hg msg.HostGrantReply
	if _, err := request(ctx, g, msg.ProtoAdminToAuth, msg.OpHostAdminGrant, msg.HostAdminGrantRequest{Host: host}, &hg, 0); err != nil {
		return fmt.Errorf("an admin host grant for %s: %w", host, err)
	}
	raw, err := msgpack.Marshal(args)
	if err != nil {
		return err
	}
	// The host's refusals are the host's: no hint about this gateway's
	// sockets, unless the fleet helper itself was not reached.
	_, err = requestBare(ctx, g, msg.ProtoAdminToFleet, msg.OpFleetAdminCall,
		msg.FleetCall{Host: host, Service: msg.PtyStore, Op: op, Args: raw, HostGrant: hg.HostGrant}, reply, 0)
	var ce clientErr
	if errors.As(err, &ce) {
		if rpc.CodeOf(ce.error) == "" {
			return explain(ce.error, ce.path)
		}
		return ce.error
	}
	return err
}
