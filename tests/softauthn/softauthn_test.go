package softauthn

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

const (
	rpID   = "localhost"
	origin = "http://localhost:8080"
)

type user struct {
	id    []byte
	name  string
	creds []webauthn.Credential
}

func (u *user) WebAuthnID() []byte                         { return u.id }
func (u *user) WebAuthnName() string                       { return u.name }
func (u *user) WebAuthnDisplayName() string                { return u.name }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func relyingParty(t *testing.T) *webauthn.WebAuthn {
	t.Helper()
	w, err := webauthn.New(&webauthn.Config{
		RPID:          rpID,
		RPDisplayName: "sluice test",
		RPOrigins:     []string{origin},
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		AttestationPreference: protocol.PreferNoAttestation,
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// register runs a registration ceremony with go-webauthn as the relying
// party and returns the stored credential.
func register(t *testing.T, w *webauthn.WebAuthn, a *Authenticator, u *user) webauthn.Credential {
	t.Helper()
	creation, session, err := w.BeginRegistration(u)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := json.Marshal(creation)
	resp, err := a.Register(opts)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBody(bytes.NewReader(resp))
	if err != nil {
		t.Fatalf("parse registration: %v", err)
	}
	cred, err := w.CreateCredential(u, *session, parsed)
	if err != nil {
		t.Fatalf("create credential: %v", describe(err))
	}
	u.creds = append(u.creds, *cred)
	return *cred
}

// login runs a discoverable login and returns the updated credential.
func login(w *webauthn.WebAuthn, a *Authenticator, u *user, wrap bool) (*webauthn.Credential, error) {
	assertion, session, err := w.BeginDiscoverableLogin()
	if err != nil {
		return nil, err
	}
	var opts []byte
	if wrap {
		opts, _ = json.Marshal(assertion)
	} else {
		opts, _ = json.Marshal(assertion.Response)
	}
	resp, err := a.Login(opts)
	if err != nil {
		return nil, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBody(bytes.NewReader(resp))
	if err != nil {
		return nil, err
	}
	return w.ValidateDiscoverableLogin(func(rawID, handle []byte) (webauthn.User, error) {
		if !bytes.Equal(handle, u.id) {
			return nil, errors.New("unknown user handle")
		}
		return u, nil
	}, *session, parsed)
}

func describe(err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return errors.New(pe.Error() + ": " + pe.DevInfo)
	}
	return err
}

func TestRoundTrip(t *testing.T) {
	w := relyingParty(t)
	a := New(rpID, origin)
	u := &user{id: []byte("user-handle-alice"), name: "alice"}
	cred := register(t, w, a, u)
	if !cred.Flags.UserVerified || !cred.Flags.UserPresent {
		t.Fatalf("flags %+v", cred.Flags)
	}
	if cred.AttestationFormat != "none" {
		t.Fatalf("attestation format %q", cred.AttestationFormat)
	}
	held := a.Credentials()
	if len(held) != 1 || !bytes.Equal(held[0].ID, cred.ID) || !bytes.Equal(held[0].UserHandle, u.id) || held[0].UserName != "alice" {
		t.Fatalf("authenticator holds %+v", held)
	}
	for i, wrap := range []bool{true, false, true} {
		got, err := login(w, a, u, wrap)
		if err != nil {
			t.Fatalf("login %d: %v", i, describe(err))
		}
		if got.Authenticator.SignCount != uint32(i+1) || got.Authenticator.CloneWarning {
			t.Fatalf("login %d: counter %d clone %v", i, got.Authenticator.SignCount, got.Authenticator.CloneWarning)
		}
		u.creds[0] = *got
	}
}

func TestNegativeKnobs(t *testing.T) {
	w := relyingParty(t)
	tests := []struct {
		name  string
		knob  func(a *Authenticator)
		clone bool // expect a clone warning rather than an error
	}{
		{"wrong key", func(a *Authenticator) { a.WrongKey = true }, false},
		{"wrong origin", func(a *Authenticator) { a.Origin = "http://evil.example:8080" }, false},
		{"no user verification", func(a *Authenticator) { a.NoUV = true }, false},
		{"no user presence", func(a *Authenticator) { a.NoUP = true }, false},
		{"no user handle", func(a *Authenticator) { a.OmitUserHandle = true }, false},
		{"other challenge", func(a *Authenticator) { a.ChallengeOverride = bytes.Repeat([]byte{1}, 32) }, false},
		{"counter rollback", func(a *Authenticator) { a.Credentials()[0].SignCount = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(rpID, origin)
			u := &user{id: []byte("handle"), name: "bob"}
			register(t, w, a, u)
			got, err := login(w, a, u, true) // counter 1 stored
			if err != nil {
				t.Fatal(describe(err))
			}
			u.creds[0] = *got
			tt.knob(a)
			got, err = login(w, a, u, true)
			if tt.clone {
				if err != nil || !got.Authenticator.CloneWarning {
					t.Fatalf("login = %+v, %v; want a clone warning", got, err)
				}
				return
			}
			if err == nil {
				t.Fatal("login succeeded")
			}
			t.Logf("refused: %v", describe(err))
		})
	}
}

func TestRefusals(t *testing.T) {
	w := relyingParty(t)
	a := New(rpID, origin)
	u := &user{id: []byte("handle"), name: "carol"}
	cred := register(t, w, a, u)

	// Excluded: the authenticator already holds a credential on the list.
	creation, _, _ := w.BeginRegistration(u, webauthn.WithExclusions([]protocol.CredentialDescriptor{cred.Descriptor()}))
	opts, _ := json.Marshal(creation)
	if _, err := a.Register(opts); !errors.Is(err, ErrExcluded) {
		t.Fatalf("excluded registration: %v", err)
	}
	if n := len(a.Credentials()); n != 1 {
		t.Fatalf("%d credentials after a refused create", n)
	}
	// Another RP's options.
	other := New("example.org", "https://example.org")
	if _, err := other.Register(opts); !errors.Is(err, ErrRPID) {
		t.Fatalf("other RP: %v", err)
	}
	// Login with an allow list naming a credential we do not hold.
	assertion, _, _ := w.BeginLogin(&user{id: []byte("x"), creds: []webauthn.Credential{{ID: []byte("not ours")}}})
	lo, _ := json.Marshal(assertion)
	if _, err := a.Login(lo); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("allow list of strangers: %v", err)
	}
	// A fresh authenticator has nothing to offer.
	fresh := New(rpID, origin)
	assertion, _, _ = w.BeginDiscoverableLogin()
	lo, _ = json.Marshal(assertion)
	if _, err := fresh.Login(lo); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("empty authenticator: %v", err)
	}
	for _, bad := range []string{`{}`, `not json`, `{"publicKey":{"challenge":"!!"}}`} {
		if _, err := a.Register([]byte(bad)); err == nil {
			t.Errorf("Register(%s) succeeded", bad)
		}
		if _, err := a.Login([]byte(bad)); err == nil {
			t.Errorf("Login(%s) succeeded", bad)
		}
	}
}

// A clone holds the same keys: both sign, and the relying party sees the
// counters collide.
func TestClone(t *testing.T) {
	w := relyingParty(t)
	a := New(rpID, origin)
	u := &user{id: []byte("handle"), name: "dave"}
	register(t, w, a, u)
	b := a.Clone()
	got, err := login(w, a, u, true)
	if err != nil {
		t.Fatal(describe(err))
	}
	u.creds[0] = *got
	got, err = login(w, b, u, true)
	if err != nil {
		t.Fatal(describe(err))
	}
	if !got.Authenticator.CloneWarning {
		t.Fatal("the clone's assertion raised no clone warning")
	}
}
