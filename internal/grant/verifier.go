package grant

import (
	"errors"
	"fmt"
	"time"

	"sluice/internal/names"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

// Errors a Verifier returns besides Verify's and the revocation list's
// (revoke.ErrRevoked, revoke.ErrUnavailable); test with errors.Is.
var (
	// ErrNoKey: the verifier has no key (the all-zero key, which ParseKey
	// never returns), so every grant is refused rather than checked
	// against a key anyone can compute MACs with.
	ErrNoKey = errors.New("grant: no grant key")
	// ErrBadUser: an authentic grant whose user name is outside the rule
	// auth signs by (names.SluiceUser). Auth and its checker then
	// disagree, and no rule downstream should guess what the name means.
	ErrBadUser = errors.New("grant: user name outside the sluice user rule")
)

// Revocations is what a Verifier asks once a grant is authentic:
// *revoke.Checker (the published list) and *revoke.List (auth's own) are
// ones. Check returns an error wrapping revoke.ErrRevoked or
// revoke.ErrUnavailable, or any other error the source had.
type Revocations interface {
	Check(g msg.Grant) error
}

// Verifier is the one check of a grant, the same in every helper that
// takes one: the key is set, the MAC holds (constant time, first, so
// nothing about a forged grant is reported), the times are valid now, the
// revocation list does not void it, and the user name is one auth issues.
type Verifier struct {
	Key Key
	// Revoked is asked after the MAC and times. nil: no revocation check,
	// for tests and helpers started without a revocation directory (the
	// units always give one).
	Revoked Revocations
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Verify returns nil if g is good now, else an error that errors.Is
// matches with ErrNoKey, ErrForged, ErrExpired, ErrNotYetValid,
// revoke.ErrRevoked, revoke.ErrUnavailable, ErrBadUser, or whatever error
// Revoked returned.
func (v *Verifier) Verify(g msg.Grant) error {
	if v.Key == (Key{}) {
		return ErrNoKey
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if err := Verify(v.Key, g, now); err != nil {
		return err
	}
	if v.Revoked != nil {
		if err := v.Revoked.Check(g); err != nil {
			return err
		}
	}
	if !names.SluiceUser(g.User) {
		return fmt.Errorf("%w: %q", ErrBadUser, g.User)
	}
	return nil
}

// Refusal turns a Verify error into the bad-grant error frame the caller
// sees: text fit for the user, no detail of a forged grant. The cause
// belongs in the helper's log, with who asked.
func Refusal(err error) error {
	switch {
	case errors.Is(err, ErrNoKey):
		return rpc.Errorf(msg.CodeBadGrant, "grants are not checked here (no grant key); ask an admin")
	case errors.Is(err, ErrExpired), errors.Is(err, ErrNotYetValid):
		return rpc.Errorf(msg.CodeBadGrant, "grant expired or not yet valid; sign in again")
	case errors.Is(err, revoke.ErrRevoked):
		return rpc.Errorf(msg.CodeBadGrant, "access revoked; sign in again")
	case errors.Is(err, revoke.ErrUnavailable):
		return rpc.Errorf(msg.CodeBadGrant, "the revocation list cannot be read, so no grant is accepted; ask an admin")
	case errors.Is(err, ErrBadUser):
		return rpc.Errorf(msg.CodeBadGrant, "grant for an invalid user name")
	}
	return rpc.Errorf(msg.CodeBadGrant, "grant not valid")
}
