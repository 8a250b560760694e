// Package gateway is a host's side of the fleet: it serves "gateway to
// policy" and "gateway to ptystore" by turning a verified host grant into
// the grant the host's own handlers already check, and nothing else.
//
// Who reaches these routes: only the relay account (the route's allowlist,
// from the kernel's credentials), and that account only through sshd's
// forced command sluice-relay. What vouches for the user: the host grant,
// Ed25519-signed by the gateway's auth, naming this host, short-lived.
// The grant key this host's helpers hold already lets them sign grants
// (it is a MAC key), so minting one here for a user the gateway vouched
// for adds no power; the host's own policy then decides as for a local
// sign-in, and its own revocation list still applies.
package gateway

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/hostgrant"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// Adapter wraps a host helper's web handler for the gateway route.
type Adapter struct {
	Host     string            // this host's name in the fleet (hosts add NAME)
	Gateway  ed25519.PublicKey // the gateway auth's public key
	GrantKey grant.Key         // the host's own grant key
	// Ops maps each op served to whether it needs a host grant; any op
	// not listed is refused before the inner handler sees it.
	Ops map[string]bool
	// Admin, when set, serves AdminOps to a gateway admin's host grant
	// (msg.HostGrant.Admin) from the host's admin table, as sluicectl on
	// the host would call it. Nil (the default) refuses every admin grant: a
	// host lets the gateway's admins list and end its sessions only if
	// its own admin said so (sluice-ptystore --gateway-admin).
	Admin *optable.Table
	Log   *slog.Logger
	Now   func() time.Time
}

// AdminOps are what an admin host grant may do on "gateway to ptystore"
// when the host allows it: list every session and end one.
var AdminOps = map[string]bool{msg.OpPtyList: true, msg.OpPtyDrop: true}

// PolicyOps are served on "gateway to policy".
var PolicyOps = map[string]bool{msg.OpCreateShellSession: true, msg.OpAllowedTargets: true}

// PtyStoreOps are served on "gateway to ptystore". pty-viewers takes no
// grant, as from the frontend: the route is the authority, and a lie
// about viewers only moves the detached limit of sessions (docs/fleet.md).
var PtyStoreOps = map[string]bool{
	msg.OpPtyGet: true, msg.OpPtyList: true,
	msg.OpPtyDrop: true, msg.OpPtyShare: true, msg.OpPtyViewers: false,
}

// Table returns the gateway protocol's table: the ops of the web table
// that a.Ops lists, in the web table's order, each taking msg.GatewayArgs.
// A call's host grant is verified, a grant of this host's key for its
// user is put into the arguments in place of whatever grant they held,
// and the web op runs on them as it would for the frontend.
func (a *Adapter) Table(protocol string, web *optable.Table) optable.Table {
	t := optable.Table{Protocol: protocol, Note: "only with --fleet-host and --gateway-key: the host grant is verified and a grant of this host's key for its user replaces args.grant"}
	for _, e := range web.Ops {
		needGrant, ok := a.Ops[e.Name]
		if !ok {
			continue
		}
		op := e.Name
		var alt *optable.Entry
		if a.Admin != nil && AdminOps[op] {
			alt, _ = a.Admin.Lookup(op)
		}
		t.Ops = append(t.Ops, optable.ViaOr(e, alt, func(_ context.Context, c *rpc.Call, ga msg.GatewayArgs) ([]byte, bool, error) {
			// The call's log line says which fleet host it came to and
			// for whom (journal: SLUICE_HOST, SLUICE_FLEET_USER).
			c.Attrs = append(c.Attrs, slog.String("host", a.Host))
			if ga.HostGrant != nil && ga.HostGrant.Admin {
				c.Attrs = append(c.Attrs, slog.String("fleet_admin", ga.HostGrant.User))
				return a.admin(c, op, ga, alt != nil)
			}
			if !needGrant {
				return ga.Args, false, nil
			}
			g, err := a.grantFor(ga.HostGrant)
			if err != nil {
				a.log().Warn("gateway: bad host grant", "op", op, "host", a.Host, "pid", c.Peer.PID, "uid", c.Peer.UID, "err", err)
				return nil, false, err
			}
			c.Attrs = append(c.Attrs, slog.String("fleet_user", g.User))
			args, err := withGrant(ga.Args, g)
			if err != nil {
				return nil, false, err
			}
			a.log().Info("gateway: call", "op", op, "user", g.User, "host", a.Host, "pid", c.Peer.PID)
			return args, false, nil
		}))
	}
	return t
}

// admin checks one admin call: a verified admin host grant, a host that
// takes them, an op in AdminOps; the arguments go to the host's admin
// table as the gateway sent them.
func (a *Adapter) admin(c *rpc.Call, op string, ga msg.GatewayArgs, served bool) ([]byte, bool, error) {
	if err := a.verify(ga.HostGrant); err != nil {
		a.log().Warn("gateway: bad admin host grant", "op", op, "host", a.Host, "pid", c.Peer.PID, "err", err)
		return nil, false, err
	}
	if a.Admin == nil {
		a.log().Warn("gateway: admin call refused: this host takes none from the gateway", "op", op, "admin", ga.HostGrant.User, "host", a.Host)
		return nil, false, rpc.Errorf(rpc.CodeForbidden, "this host takes no admin calls from the gateway (its ptystore has no --gateway-admin)")
	}
	if !AdminOps[op] || !served {
		return nil, false, rpc.Errorf(rpc.CodeForbidden, "%s is not served to the gateway's admins", op)
	}
	a.log().Info("gateway: admin call", "op", op, "admin", ga.HostGrant.User, "host", a.Host, "pid", c.Peer.PID)
	return ga.Args, true, nil
}

// verify checks a host grant's signature, host and times, and says why
// not in the caller's terms.
func (a *Adapter) verify(hg *msg.HostGrant) error {
	if hg == nil {
		return rpc.Errorf(msg.CodeBadGrant, "no host grant")
	}
	if err := hostgrant.Verify(a.Gateway, a.Host, *hg, a.now()); err != nil {
		if errors.Is(err, hostgrant.ErrExpired) || errors.Is(err, hostgrant.ErrNotYetValid) {
			return rpc.Errorf(msg.CodeBadGrant, "host grant expired or not yet valid; sign in again")
		}
		if errors.Is(err, hostgrant.ErrWrongHost) {
			return rpc.Errorf(msg.CodeBadGrant, "host grant is for another host")
		}
		return rpc.Errorf(msg.CodeBadGrant, "host grant not valid")
	}
	return nil
}

// grantFor verifies hg and returns a host-key grant for its user, good
// no longer than hg.
func (a *Adapter) grantFor(hg *msg.HostGrant) (msg.Grant, error) {
	if err := a.verify(hg); err != nil {
		return msg.Grant{}, err
	}
	issued := time.UnixMilli(hg.Issued)
	g, err := grant.SignCredential(a.GrantKey, hg.User, hg.Credential, issued, time.UnixMilli(hg.Expires).Sub(issued))
	if err != nil {
		return msg.Grant{}, rpc.Errorf(msg.CodeBadGrant, "host grant: %v", err)
	}
	return g, nil
}

// withGrant sets the "grant" field of an op's msgpack arguments, keeping
// every other field as the caller sent it.
func withGrant(raw []byte, g msg.Grant) ([]byte, error) {
	m := map[string]any{}
	if len(raw) > 0 {
		if err := (&rpc.Call{Body: raw}).Decode(&m); err != nil {
			return nil, err
		}
	}
	m["grant"] = g
	b, err := msgpack.Marshal(m)
	if err != nil {
		return nil, rpc.Errorf(rpc.CodeBadRequest, "re-encode args: %v", err)
	}
	return b, nil
}

func (a *Adapter) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Adapter) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}
