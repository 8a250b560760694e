package grant

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

// revocations is a fixed answer of a revocation source.
type revocations struct{ err error }

func (r revocations) Check(msg.Grant) error { return r.err }

// TestVerifier is the one grant check of every helper. The rows marked
// "was:" are where policy's and ptystore's (and record's, auth's) checks
// differed before there was one; the stricter rule is kept in each.
func TestVerifier(t *testing.T) {
	key := NewKey()
	sign := func(k Key, user string, issued time.Time) msg.Grant {
		t.Helper()
		g, err := Sign(k, user, issued, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	alice := sign(key, "alice", t0)
	revokedList := &revoke.List{Users: map[string]revoke.User{"alice": {Disabled: true}}}
	storeDown := errors.New("database is locked")
	for _, tc := range []struct {
		name    string
		key     Key
		g       msg.Grant
		revoked Revocations
		want    error  // errors.Is; nil: accepted
		text    string // Refusal's text
	}{
		{"good", key, alice, nil, nil, ""},
		{"good, list has nothing against it", key, alice, &revoke.List{}, nil, ""},
		{"another key", key, sign(NewKey(), "alice", t0), nil, ErrForged, "grant not valid"},
		{"zero grant", key, msg.Grant{}, nil, ErrForged, "grant not valid"},
		{"expired", key, sign(key, "alice", t0.Add(-2*time.Hour)), nil, ErrExpired, "grant expired or not yet valid; sign in again"},
		{"from the future", key, sign(key, "alice", t0.Add(time.Hour)), nil, ErrNotYetValid, "grant expired or not yet valid; sign in again"},
		{"user disabled", key, alice, revokedList, revoke.ErrRevoked, "access revoked; sign in again"},
		{"list unreadable", key, alice, revocations{fmt.Errorf("%w: gone", revoke.ErrUnavailable)}, revoke.ErrUnavailable, "the revocation list cannot be read, so no grant is accepted; ask an admin"},
		{"source's own error passes through", key, alice, revocations{storeDown}, storeDown, "grant not valid"},
		// was: policy refused, ptystore, record and auth accepted an
		// authentic grant for a name auth never issues.
		{"upper case user", key, sign(key, "Alice", t0), nil, ErrBadUser, "grant for an invalid user name"},
		{"user starting with a dash", key, sign(key, "-alice", t0), nil, ErrBadUser, "grant for an invalid user name"},
		{"user with a colon", key, sign(key, "a:b", t0), nil, ErrBadUser, "grant for an invalid user name"},
		{"user over 32 bytes", key, sign(key, strings.Repeat("a", 33), t0), nil, ErrBadUser, "grant for an invalid user name"},
		// was: record's "no grant key" check could not fire (len of an
		// array), so with no key file it checked MACs with the zero key,
		// which anyone can compute.
		{"no key", Key{}, sign(Key{}, "alice", t0), nil, ErrNoKey, "grants are not checked here (no grant key); ask an admin"},
		// The MAC comes first: a forged grant of a revoked user with a bad
		// name says only that it is forged.
		{"forged, revoked and misnamed", key, sign(NewKey(), "Alice", t0), revokedList, ErrForged, "grant not valid"},
		// Times before the list: an expired grant is expired, whatever
		// the list says.
		{"expired and revoked", key, sign(key, "alice", t0.Add(-2*time.Hour)), revokedList, ErrExpired, "grant expired or not yet valid; sign in again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Verifier{Key: tc.key, Revoked: tc.revoked, Now: func() time.Time { return t0 }}
			err := v.Verify(tc.g)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			ref := Refusal(err)
			var re *rpc.Error
			if !errors.As(ref, &re) || re.Code != msg.CodeBadGrant || re.Msg != tc.text {
				t.Fatalf("refusal %v, want %s: %s", ref, msg.CodeBadGrant, tc.text)
			}
		})
	}
}
