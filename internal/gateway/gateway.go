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
	"os"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/hostgrant"
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
	Log *slog.Logger
	Now func() time.Time
}

// PolicyOps are served on "gateway to policy".
var PolicyOps = map[string]bool{msg.OpCreateShellSession: true, msg.OpAllowedTargets: true}

// PtyStoreOps are served on "gateway to ptystore". pty-viewers takes no
// grant, as from the frontend: the route is the authority, and a lie
// about viewers only moves the detached limit of sessions (docs/fleet.md).
var PtyStoreOps = map[string]bool{
	msg.OpPtyPut: true, msg.OpPtyGet: true, msg.OpPtyList: true,
	msg.OpPtyDrop: true, msg.OpPtyShare: true, msg.OpPtyViewers: false,
}

// Wrap returns the route's handler: decode, check the op, verify the host
// grant, put a grant of this host's key for its user into the arguments,
// and call inner with them.
func (a *Adapter) Wrap(inner rpc.HandlerFunc) rpc.HandlerFunc {
	return func(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
		var req msg.Request
		if err := c.Decode(&req); err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
		c.Label = req.Op
		needGrant, ok := a.Ops[req.Op]
		if !ok {
			closeAll(c.FDs)
			c.Label = "unknown"
			return rpc.Reply{}, rpc.Errorf(msg.CodeBadRequest, "unknown op %q", req.Op)
		}
		var ga msg.GatewayArgs
		if err := (&rpc.Call{Body: req.Args}).Decode(&ga); err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
		args := ga.Args
		if needGrant {
			g, err := a.grantFor(ga.HostGrant)
			if err != nil {
				closeAll(c.FDs)
				a.log().Warn("gateway: bad host grant", "op", req.Op, "host", a.Host, "pid", c.Peer.PID, "uid", c.Peer.UID, "err", err)
				return rpc.Reply{}, err
			}
			if args, err = withGrant(ga.Args, g); err != nil {
				closeAll(c.FDs)
				return rpc.Reply{}, err
			}
			a.log().Info("gateway: call", "op", req.Op, "user", g.User, "host", a.Host, "pid", c.Peer.PID)
		}
		body, err := msgpack.Marshal(msg.Request{Op: req.Op, Args: args})
		if err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
		in := &rpc.Call{Peer: c.Peer, Intent: c.Intent, Body: body, FDs: c.FDs}
		rep, err := inner(ctx, in)
		c.Label = in.Label
		return rep, err
	}
}

// grantFor verifies hg and returns a host-key grant for its user, good
// no longer than hg.
func (a *Adapter) grantFor(hg *msg.HostGrant) (msg.Grant, error) {
	if hg == nil {
		return msg.Grant{}, rpc.Errorf(msg.CodeBadGrant, "no host grant")
	}
	now := a.now()
	if err := hostgrant.Verify(a.Gateway, a.Host, *hg, now); err != nil {
		if errors.Is(err, hostgrant.ErrExpired) || errors.Is(err, hostgrant.ErrNotYetValid) {
			return msg.Grant{}, rpc.Errorf(msg.CodeBadGrant, "host grant expired or not yet valid; sign in again")
		}
		if errors.Is(err, hostgrant.ErrWrongHost) {
			return msg.Grant{}, rpc.Errorf(msg.CodeBadGrant, "host grant is for another host")
		}
		return msg.Grant{}, rpc.Errorf(msg.CodeBadGrant, "host grant not valid")
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
		return nil, rpc.Errorf(msg.CodeBadRequest, "re-encode args: %v", err)
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

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
