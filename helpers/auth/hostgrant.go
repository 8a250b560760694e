package auth

import (
	"crypto/ed25519"
	"fmt"
	"os/user"
	"strconv"
	"time"

	"sluice/internal/hostgrant"
	"sluice/internal/names"
	"sluice/msg"
	"sluice/rpc"
)

// hostGrant serves msg.OpHostGrant: for a grant auth itself checks (MAC,
// times, its own revocation record), a host grant for the same user and
// passkey, bound to one host, never outliving the grant. The frontend so
// gets nothing for a user it holds no grant of.
func (s *Service) hostGrant(a msg.HostGrantRequest) (msg.HostGrantReply, error) {
	if s.cfg.HostKey == nil {
		return msg.HostGrantReply{}, rpc.Errorf(msg.CodeFailed, "this gateway has no fleet key (sluice-auth --host-grant-key)")
	}
	if err := s.checkGrant(a.Grant); err != nil {
		return msg.HostGrantReply{}, err
	}
	now := s.cfg.Now()
	life := hostgrant.DefaultLifetime
	if left := a.Grant.Expires - now.UnixMilli(); left < life.Milliseconds() {
		life = time.Duration(left) * time.Millisecond
	}
	hg, err := hostgrant.Sign(s.cfg.HostKey, a.Grant.User, a.Grant.Credential, a.Host, now, life)
	if err != nil {
		return msg.HostGrantReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	s.log.Info("auth: host grant", "user", a.Grant.User, "host", a.Host, "expires", hg.Expires)
	return msg.HostGrantReply{HostGrant: hg}, nil
}

// gatewayKey serves msg.OpGatewayKey (admins): the public half, which
// every host of the fleet pins.
func (s *Service) gatewayKey() (msg.GatewayKeyReply, error) {
	if s.cfg.HostKey == nil {
		return msg.GatewayKeyReply{}, rpc.Errorf(msg.CodeNotFound, "this gateway has no fleet key (sluice-auth --host-grant-key)")
	}
	return msg.GatewayKeyReply{Public: s.cfg.HostKey.Public().(ed25519.PublicKey)}, nil
}

// hostAdminGrant serves msg.OpHostAdminGrant (admins, as the kernel says:
// the caller check before every admin op): an admin host grant for one
// host, named after the calling admin's account, for sluicectl's
// fleet-wide sessions. Only hosts whose ptystore takes admin calls from
// the gateway (--gateway-admin) accept it, and only for list and end.
func (s *Service) hostAdminGrant(a msg.HostAdminGrantRequest, p rpc.Peer) (msg.HostGrantReply, error) {
	if s.cfg.HostKey == nil {
		return msg.HostGrantReply{}, rpc.Errorf(msg.CodeFailed, "this gateway has no fleet key (sluice-auth --host-grant-key)")
	}
	name := fmt.Sprintf("uid%d", p.UID)
	if u, err := user.LookupId(strconv.Itoa(int(p.UID))); err == nil && names.SluiceUser(u.Username) {
		name = u.Username
	}
	hg, err := hostgrant.SignAdmin(s.cfg.HostKey, name, a.Host, s.cfg.Now(), hostgrant.DefaultLifetime)
	if err != nil {
		return msg.HostGrantReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	s.log.Info("auth: admin host grant", "admin", name, "uid", p.UID, "pid", p.PID, "host", a.Host, "expires", hg.Expires)
	return msg.HostGrantReply{HostGrant: hg}, nil
}
