package auth

import (
	"context"
	"fmt"
	"slices"

	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

// Tables is auth's whole surface: what the frontend and an admin may ask.
//
// "web to auth" (the frontend's uid, from the kernel): the WebAuthn
// ceremonies, a user's own passkeys (each call proves the user with a
// grant), and host grants for the fleet. Nothing here trusts the frontend
// about who the user is: registration spends an admin's token, login
// checks an assertion, the rest verify a grant.
//
// "admin to auth" (the --allow list; then Guard: uid 0 or the --admins
// list, with the caller's groups from the kernel): enrollment tokens and
// the users and passkeys of anyone.
func (s *Service) Tables() []optable.Table {
	return []optable.Table{
		{
			Protocol: msg.ProtoWebToAuth,
			Ops: []optable.Entry{
				optable.Plain(msg.OpRegisterBegin, s.registerBegin),
				optable.Plain(msg.OpRegisterFinish, s.registerFinish),
				optable.Plain(msg.OpLoginBegin, s.loginBegin),
				optable.Plain(msg.OpLoginFinish, s.loginFinish),
				optable.Plain(msg.OpPasskeyList, s.webPasskeyList),
				optable.Plain(msg.OpPasskeyRevoke, s.webPasskeyRevoke),
				optable.Plain(msg.OpPasskeyAdd, s.webPasskeyAdd),
				optable.Plain(msg.OpHostGrant, s.hostGrant),
			},
		},
		{
			Protocol: msg.ProtoAdminToAuth,
			Guard:    s.adminOnly,
			Ops: []optable.Entry{
				optable.Op(msg.OpEnroll, func(_ context.Context, c *rpc.Call, a msg.Enroll) (msg.EnrollReply, error) {
					return s.enroll(a, c.Peer)
				}),
				optable.Plain(msg.OpUserList, func(optable.None) (msg.UserListReply, error) { return s.userList() }),
				s.userChangeOp(msg.OpUserDisable),
				s.userChangeOp(msg.OpUserEnable),
				s.userChangeOp(msg.OpUserRemove),
				optable.Plain(msg.OpPasskeyList, func(a msg.PasskeyList) (msg.PasskeyListReply, error) {
					return s.passkeyList(a.User, nil)
				}),
				optable.Op(msg.OpPasskeyRevoke, func(_ context.Context, c *rpc.Call, a msg.PasskeyRevoke) (msg.PasskeyRevokeReply, error) {
					return s.passkeyRevoke(a.User, a.ID, "uid "+fmt.Sprint(c.Peer.UID))
				}),
				optable.Plain(msg.OpGatewayKey, func(optable.None) (msg.GatewayKeyReply, error) { return s.gatewayKey() }),
				optable.Op(msg.OpHostAdminGrant, func(_ context.Context, c *rpc.Call, a msg.HostAdminGrantRequest) (msg.HostGrantReply, error) {
					return s.hostAdminGrant(a, c.Peer)
				}),
			},
		},
	}
}

func (s *Service) userChangeOp(op string) optable.Entry {
	return optable.Op(op, func(_ context.Context, c *rpc.Call, a msg.UserChange) (msg.UserChangeReply, error) {
		return s.userChange(op, a, c.Peer)
	})
}

// adminOnly is the admin table's guard: the route's allowlist let the
// caller connect, and only uid 0 or a configured admin may ask anything.
func (s *Service) adminOnly(_ context.Context, call *rpc.Call) error {
	if s.isAdmin(call.Peer) {
		return nil
	}
	s.log.Warn("auth: admin op refused: caller is not an admin", "op", call.Label,
		"pid", call.Peer.PID, "uid", call.Peer.UID, "gid", call.Peer.GID, "groups", call.Peer.Groups)
	return rpc.Errorf(rpc.CodeForbidden, "uid %d is not a sluice admin", call.Peer.UID)
}

func (s *Service) isAdmin(p rpc.Peer) bool {
	a := s.cfg.Admins
	if p.UID == 0 || slices.Contains(a.UIDs, p.UID) || slices.Contains(a.GIDs, p.GID) {
		return true
	}
	for _, g := range p.Groups {
		if slices.Contains(a.GIDs, g) {
			return true
		}
	}
	return false
}
