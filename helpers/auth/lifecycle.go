package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unicode"
	"unicode/utf8"

	"sluice/helpers/auth/store"
	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

// ValidPasskeyName accepts a passkey's label: up to msg.MaxPasskeyName
// bytes of UTF-8 with no control or format characters, so it is safe to
// print on a terminal and in the page.
func ValidPasskeyName(name string) error {
	if len(name) > msg.MaxPasskeyName {
		return fmt.Errorf("passkey name of %d bytes, limit %d", len(name), msg.MaxPasskeyName)
	}
	if !utf8.ValidString(name) {
		return errors.New("passkey name is not UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("passkey name holds the control character %U", r)
		}
	}
	return nil
}

// publish writes the revocation list for the grant checkers. A change is
// committed to the store before this; if publishing fails the caller hears
// so, and any later change or PublishIfMissing writes the list again.
func (s *Service) publish(l revoke.List) error {
	if s.cfg.RevocationDir == "" {
		return nil
	}
	if err := revoke.Write(s.cfg.RevocationDir, l); err != nil {
		s.log.Error("auth: revocation list not published", "dir", s.cfg.RevocationDir, "err", err)
		return rpc.Errorf(msg.CodeFailed, "saved, but the revocation list could not be published (%v): policy and ptystore do not see the change yet; run the command again", err)
	}
	return nil
}

// PublishIfMissing publishes the stored revocation list when there is no
// published one (first start, or someone removed it): until then policy
// and ptystore refuse every grant.
func (s *Service) PublishIfMissing() error {
	if s.cfg.RevocationDir == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(s.cfg.RevocationDir, revoke.FileName)); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := s.store.Revocations()
	if err != nil {
		return fmt.Errorf("auth: revocation list: %w", err)
	}
	l.Written = s.cfg.Now().UnixMilli()
	if err := revoke.Write(s.cfg.RevocationDir, l); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	s.log.Info("auth: revocation list published", "dir", s.cfg.RevocationDir)
	return nil
}

// checkGrant is how auth checks a grant on the web ops: grant.Verifier,
// as every helper does, with the revocation list as stored (auth's own
// truth, not the published copy).
func (s *Service) checkGrant(g msg.Grant) error {
	v := grant.Verifier{Key: s.cfg.GrantKey, Revoked: storedRevocations{s}, Now: s.cfg.Now}
	if err := v.Verify(g); err != nil {
		var se storeReadError
		if errors.As(err, &se) {
			return s.storeErr("check grant", se.err)
		}
		s.log.Warn("auth: bad grant", "user", g.User, "err", err)
		return grant.Refusal(err)
	}
	return nil
}

// storedRevocations is the revocation list in auth's store, for its
// grant.Verifier.
type storedRevocations struct{ s *Service }

func (r storedRevocations) Check(g msg.Grant) error {
	l, err := r.s.store.Revocations()
	if err != nil {
		return storeReadError{err}
	}
	return l.Check(g)
}

// storeReadError carries a store failure through grant.Verifier, so that
// checkGrant reports it as any other store error (busy, failed) and not as
// a bad grant.
type storeReadError struct{ err error }

func (e storeReadError) Error() string { return "auth: revocation list: " + e.err.Error() }
func (e storeReadError) Unwrap() error { return e.err }

// --- admin -------------------------------------------------------------------

func (s *Service) userList() (msg.UserListReply, error) {
	us, err := s.store.Users()
	if err != nil {
		return msg.UserListReply{}, s.storeErr("list users", err)
	}
	r := msg.UserListReply{Users: make([]msg.UserInfo, 0, len(us))}
	for _, u := range us {
		r.Users = append(r.Users, msg.UserInfo{Name: u.Name, Created: u.Created, Disabled: u.Disabled, Passkeys: u.Passkeys, LastUsed: u.LastUsed})
	}
	return r, nil
}

func (s *Service) userChange(op string, a msg.UserChange, p rpc.Peer) (msg.UserChangeReply, error) {
	if err := names.CheckSluiceUser(a.User); err != nil {
		return msg.UserChangeReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	now := s.cfg.Now()
	var (
		changed = true
		l       revoke.List
		err     error
	)
	switch op {
	case msg.OpUserDisable:
		changed, l, err = s.store.SetDisabled(a.User, true, now)
	case msg.OpUserEnable:
		changed, l, err = s.store.SetDisabled(a.User, false, now)
	case msg.OpUserRemove:
		l, err = s.store.RemoveUser(a.User, now)
	}
	if err != nil {
		return msg.UserChangeReply{}, s.storeErr(op, err)
	}
	s.log.Info("auth: "+op, "user", a.User, "changed", changed, "by_uid", p.UID, "by_pid", p.PID)
	return msg.UserChangeReply{User: a.User, Changed: changed}, s.publish(l)
}

// passkeyList lists user's passkeys; current, if set, is marked.
func (s *Service) passkeyList(user string, current []byte) (msg.PasskeyListReply, error) {
	if err := names.CheckSluiceUser(user); err != nil {
		return msg.PasskeyListReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	if _, err := s.store.User(user); err != nil {
		return msg.PasskeyListReply{}, s.storeErr("list passkeys", err)
	}
	cs, err := s.store.Credentials(user)
	if err != nil {
		return msg.PasskeyListReply{}, s.storeErr("list passkeys", err)
	}
	r := msg.PasskeyListReply{User: user, Passkeys: make([]msg.Passkey, 0, len(cs))}
	for _, c := range cs {
		r.Passkeys = append(r.Passkeys, msg.Passkey{ID: c.ID, Name: c.Name, Created: c.Created, LastUsed: c.LastUsed,
			Current: current != nil && string(current) == string(c.ID)})
	}
	return r, nil
}

func (s *Service) passkeyRevoke(user string, id []byte, by string) (msg.PasskeyRevokeReply, error) {
	if err := names.CheckSluiceUser(user); err != nil {
		return msg.PasskeyRevokeReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	if len(id) == 0 || len(id) > grant.MaxCredential {
		return msg.PasskeyRevokeReply{}, rpc.Errorf(rpc.CodeBadRequest, "passkey ID of %d bytes, want 1..%d", len(id), grant.MaxCredential)
	}
	left, l, err := s.store.RevokeCredential(user, id, s.cfg.Now())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return msg.PasskeyRevokeReply{}, rpc.Errorf(msg.CodeNotFound, "%s has no passkey %x", user, id)
		}
		return msg.PasskeyRevokeReply{}, s.storeErr("revoke passkey", err)
	}
	s.log.Info("auth: passkey revoked", "user", user, "credential", fmt.Sprintf("%x", id), "remaining", left, "by", by)
	return msg.PasskeyRevokeReply{User: user, Remaining: left}, s.publish(l)
}

// --- web, on behalf of the grant's user ---------------------------------------

func (s *Service) webPasskeyList(a msg.PasskeyList) (msg.PasskeyListReply, error) {
	if err := s.checkGrant(a.Grant); err != nil {
		return msg.PasskeyListReply{}, err
	}
	return s.passkeyList(a.Grant.User, a.Grant.Credential)
}

func (s *Service) webPasskeyRevoke(a msg.PasskeyRevoke) (msg.PasskeyRevokeReply, error) {
	if err := s.checkGrant(a.Grant); err != nil {
		return msg.PasskeyRevokeReply{}, err
	}
	user := a.Grant.User
	if !a.Last {
		cs, err := s.store.Credentials(user)
		if err != nil {
			return msg.PasskeyRevokeReply{}, s.storeErr("revoke passkey", err)
		}
		if len(cs) == 1 && string(cs[0].ID) == string(a.ID) {
			return msg.PasskeyRevokeReply{}, rpc.Errorf(msg.CodeDenied, "this is your last passkey: without it you cannot sign in until an admin enrolls you again; confirm to remove it")
		}
	}
	return s.passkeyRevoke(user, a.ID, "the user")
}

func (s *Service) webPasskeyAdd(a msg.PasskeyAdd) (msg.EnrollReply, error) {
	if err := s.checkGrant(a.Grant); err != nil {
		return msg.EnrollReply{}, err
	}
	r, err := s.newToken(a.Grant.User, s.cfg.CeremonyTTL)
	if err != nil {
		return r, err
	}
	s.log.Info("auth: passkey-add token created", "user", a.Grant.User)
	return r, nil
}
