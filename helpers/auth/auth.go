package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/auth/seal"
	"sluice/helpers/auth/store"
	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/msg"
	"sluice/rpc"
)

// Defaults and limits.
const (
	DefaultEnrollTTL   = 24 * time.Hour
	MaxEnrollTTL       = 30 * 24 * time.Hour
	DefaultCeremonyTTL = 5 * time.Minute
	maxState           = 8 << 10  // a sealed state we made is well under 2 KiB
	maxCredentialJSON  = 48 << 10 // attestation with certificates fits; the rpc frame is 64 KiB
	tokenBytes         = 32
)

// Ceremony kinds, bound into the sealed state.
const (
	kindRegister = "register"
	kindLogin    = "login"
)

// Config is the helper's configuration.
type Config struct {
	RPID          string   // WebAuthn relying party ID, e.g. "localhost"
	RPName        string   // shown by authenticators; default "sluice"
	Origins       []string // allowed origins, e.g. "http://localhost:8080"
	GrantKey      grant.Key
	SealKey       []byte
	GrantLifetime time.Duration // default grant.DefaultLifetime
	EnrollTTL     time.Duration // default DefaultEnrollTTL
	CeremonyTTL   time.Duration // default DefaultCeremonyTTL
	// Admins may call enroll, checked in the handler on top of the rpc
	// allowlist of "admin to auth". Uid 0 always may. A caller let in
	// only through a group needs that group here and in the allowlist,
	// since the kernel's group list is only fetched when the allowlist
	// needed it.
	Admins rpc.Allow
	// RevocationDir is where the revocation list is published for policy,
	// ptystore and the frontend (package revoke); empty: not published.
	RevocationDir string
	// HostKey signs host grants for the fleet (docs/fleet.md); nil: this
	// gateway has no fleet and host-grant is refused.
	HostKey ed25519.PrivateKey
	Now     func() time.Time // default time.Now
	Log     *slog.Logger
}

// Service serves the auth protocols over a store.
type Service struct {
	cfg    Config
	wa     *webauthn.WebAuthn
	store  *store.Lazy
	sealer *seal.Sealer
	log    *slog.Logger
}

// New checks cfg and builds the service. The service opens st only in
// handlers, for the operations that need it (see store.Lazy): a process
// serving a call that needs no database never takes its lock.
func New(cfg Config, st *store.Lazy) (*Service, error) {
	if cfg.RPName == "" {
		cfg.RPName = "sluice"
	}
	if cfg.GrantLifetime <= 0 {
		cfg.GrantLifetime = grant.DefaultLifetime
	}
	if cfg.EnrollTTL <= 0 {
		cfg.EnrollTTL = DefaultEnrollTTL
	}
	if cfg.EnrollTTL > MaxEnrollTTL {
		return nil, fmt.Errorf("auth: enroll TTL %v above the maximum %v", cfg.EnrollTTL, MaxEnrollTTL)
	}
	if cfg.CeremonyTTL <= 0 {
		cfg.CeremonyTTL = DefaultCeremonyTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GrantKey == (grant.Key{}) {
		return nil, errors.New("auth: no grant key")
	}
	sealer, err := seal.New(cfg.SealKey)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.RPID,
		RPDisplayName: cfg.RPName,
		RPOrigins:     cfg.Origins,
		// Passkeys: discoverable so login can be usernameless, and user
		// verification required so a stolen unlocked key is not enough.
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		AttestationPreference: protocol.PreferNoAttestation,
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: cfg.CeremonyTTL, TimeoutUVD: cfg.CeremonyTTL},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: cfg.CeremonyTTL, TimeoutUVD: cfg.CeremonyTTL},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: webauthn config: %w", err)
	}
	return &Service{cfg: cfg, wa: wa, store: st, sealer: sealer, log: cfg.Log}, nil
}

// --- enroll ----------------------------------------------------------------

func (s *Service) enroll(a msg.Enroll, p rpc.Peer) (msg.EnrollReply, error) {
	if err := names.CheckSluiceUser(a.User); err != nil {
		return msg.EnrollReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	ttl := s.cfg.EnrollTTL
	if a.TTLSeconds < 0 || a.TTLSeconds > int64(MaxEnrollTTL/time.Second) {
		return msg.EnrollReply{}, rpc.Errorf(rpc.CodeBadRequest, "ttl of %d seconds, want 0 (default) to %d", a.TTLSeconds, int64(MaxEnrollTTL/time.Second))
	}
	if a.TTLSeconds > 0 {
		ttl = time.Duration(a.TTLSeconds) * time.Second
	}
	creds, err := s.store.Credentials(a.User)
	if err != nil {
		return msg.EnrollReply{}, s.storeErr("enroll", err)
	}
	if a.UnlessEnrolled && len(creds) > 0 {
		return msg.EnrollReply{User: a.User, Passkeys: len(creds)}, nil
	}
	r, err := s.newToken(a.User, ttl)
	if err != nil {
		return r, err
	}
	r.Passkeys = len(creds)
	s.log.Info("auth: enrollment token created", "user", a.User, "expires", time.UnixMilli(r.Expires).UTC(), "by_uid", p.UID, "by_pid", p.PID)
	return r, nil
}

// newToken records a one-time enrollment token for user (creating the
// user if need be) and returns it.
func (s *Service) newToken(user string, ttl time.Duration) (msg.EnrollReply, error) {
	now := s.cfg.Now()
	token := make([]byte, tokenBytes)
	rand.Read(token)
	tok := base64.RawURLEncoding.EncodeToString(token)
	handle := make([]byte, 32)
	rand.Read(handle)
	expires := now.Add(ttl)
	if _, err := s.store.Enroll(user, handle, hashToken(tok), expires, now); err != nil {
		return msg.EnrollReply{}, s.storeErr("enroll", err)
	}
	return msg.EnrollReply{User: user, Token: tok, Expires: expires.UnixMilli()}, nil
}

// hashToken is how tokens are stored: a token is 256 random bits, so a
// plain hash is as good as a slow one and keeps lookups exact.
func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte("sluice enroll token\x00" + tok))
	return h[:]
}

func checkToken(tok string) error {
	if len(tok) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return rpc.Errorf(rpc.CodeBadRequest, "enrollment token of %d characters, want %d", len(tok), base64.RawURLEncoding.EncodedLen(tokenBytes))
	}
	if _, err := base64.RawURLEncoding.DecodeString(tok); err != nil {
		return rpc.Errorf(rpc.CodeBadRequest, "enrollment token is not base64url")
	}
	return nil
}

// --- ceremony state ----------------------------------------------------------

// ceremony is what the sealed state holds.
type ceremony struct {
	Session   []byte `msgpack:"session"` // webauthn.SessionData, JSON
	User      string `msgpack:"user,omitempty"`
	TokenHash []byte `msgpack:"token_hash,omitempty"`
}

func (s *Service) sealState(kind string, sd *webauthn.SessionData, c ceremony, now time.Time) ([]byte, error) {
	js, err := json.Marshal(sd)
	if err != nil {
		return nil, fmt.Errorf("auth: encode session: %w", err)
	}
	c.Session = js
	raw, err := msgpack.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("auth: encode state: %w", err)
	}
	return s.sealer.Seal(kind, raw, now.Add(s.cfg.CeremonyTTL)), nil
}

func (s *Service) openState(kind string, box []byte, now time.Time) (ceremony, webauthn.SessionData, time.Time, error) {
	var c ceremony
	var sd webauthn.SessionData
	if len(box) > maxState {
		return c, sd, time.Time{}, rpc.Errorf(rpc.CodeBadRequest, "state of %d bytes, limit %d", len(box), maxState)
	}
	raw, expires, err := s.sealer.Open(kind, box, now)
	if err != nil {
		what := map[string]string{kindRegister: "registration", kindLogin: "sign-in"}[kind]
		if errors.Is(err, seal.ErrExpired) {
			return c, sd, expires, rpc.Errorf(msg.CodeDenied, "the %s attempt expired; start again", what)
		}
		return c, sd, expires, rpc.Errorf(msg.CodeDenied, "the %s attempt is not valid (tampered with, or from another ceremony); start again", what)
	}
	if err := msgpack.Unmarshal(raw, &c); err != nil {
		return c, sd, expires, fmt.Errorf("auth: sealed state undecodable: %w", err)
	}
	if err := json.Unmarshal(c.Session, &sd); err != nil {
		return c, sd, expires, fmt.Errorf("auth: sealed session undecodable: %w", err)
	}
	return c, sd, expires, nil
}

// --- registration ------------------------------------------------------------

// waUser adapts a stored user to go-webauthn.
type waUser struct {
	u     store.User
	creds []webauthn.Credential
}

func (w *waUser) WebAuthnID() []byte                         { return w.u.Handle }
func (w *waUser) WebAuthnName() string                       { return w.u.Name }
func (w *waUser) WebAuthnDisplayName() string                { return w.u.Name }
func (w *waUser) WebAuthnCredentials() []webauthn.Credential { return w.creds }

func (s *Service) loadUser(u store.User) (*waUser, error) {
	stored, err := s.store.Credentials(u.Name)
	if err != nil {
		return nil, err
	}
	w := &waUser{u: u}
	for _, sc := range stored {
		var c webauthn.Credential
		if err := json.Unmarshal(sc.Data, &c); err != nil {
			return nil, fmt.Errorf("auth: credential %x of %s undecodable: %w", sc.ID, u.Name, err)
		}
		// The store's counter is the one advanced under its lock.
		c.Authenticator.SignCount = sc.SignCount
		w.creds = append(w.creds, c)
	}
	return w, nil
}

func (s *Service) registerBegin(a msg.RegisterBegin) (msg.RegisterBeginReply, error) {
	if err := checkToken(a.Token); err != nil {
		return msg.RegisterBeginReply{}, err
	}
	now := s.cfg.Now()
	th := hashToken(a.Token)
	_, u, err := s.store.Token(th, now)
	if err != nil {
		return msg.RegisterBeginReply{}, s.storeErr("register", err)
	}
	wu, err := s.loadUser(u)
	if err != nil {
		return msg.RegisterBeginReply{}, s.storeErr("load credentials", err)
	}
	creation, sd, err := s.wa.BeginRegistration(wu,
		webauthn.WithExclusions(webauthn.Credentials(wu.creds).CredentialDescriptors()))
	if err != nil {
		return msg.RegisterBeginReply{}, fmt.Errorf("auth: begin registration for %s: %w", u.Name, err)
	}
	opts, err := json.Marshal(creation)
	if err != nil {
		return msg.RegisterBeginReply{}, fmt.Errorf("auth: encode creation options: %w", err)
	}
	state, err := s.sealState(kindRegister, sd, ceremony{User: u.Name, TokenHash: th}, now)
	if err != nil {
		return msg.RegisterBeginReply{}, err
	}
	return msg.RegisterBeginReply{User: u.Name, Options: opts, State: state}, nil
}

func (s *Service) registerFinish(a msg.RegisterFinish) (msg.RegisterFinishReply, error) {
	if err := checkToken(a.Token); err != nil {
		return msg.RegisterFinishReply{}, err
	}
	if len(a.Credential) == 0 || len(a.Credential) > maxCredentialJSON {
		return msg.RegisterFinishReply{}, rpc.Errorf(rpc.CodeBadRequest, "credential of %d bytes, want 1..%d", len(a.Credential), maxCredentialJSON)
	}
	if err := ValidPasskeyName(a.Name); err != nil {
		return msg.RegisterFinishReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
	}
	now := s.cfg.Now()
	c, sd, _, err := s.openState(kindRegister, a.State, now)
	if err != nil {
		return msg.RegisterFinishReply{}, err
	}
	th := hashToken(a.Token)
	if subtle.ConstantTimeCompare(th, c.TokenHash) != 1 {
		return msg.RegisterFinishReply{}, rpc.Errorf(msg.CodeDenied, "the registration attempt was begun with another enrollment token")
	}
	_, u, err := s.store.Token(th, now)
	if err != nil {
		return msg.RegisterFinishReply{}, s.storeErr("register", err)
	}
	if u.Name != c.User {
		return msg.RegisterFinishReply{}, rpc.Errorf(msg.CodeDenied, "the registration attempt was for another user")
	}
	wu, err := s.loadUser(u)
	if err != nil {
		return msg.RegisterFinishReply{}, s.storeErr("load credentials", err)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(a.Credential)
	if err != nil {
		return msg.RegisterFinishReply{}, rpc.Errorf(rpc.CodeBadRequest, "credential: %s", describe(err))
	}
	cred, err := s.wa.CreateCredential(wu, sd, parsed)
	if err != nil {
		s.log.Warn("auth: registration refused", "user", u.Name, "err", describeDev(err))
		return msg.RegisterFinishReply{}, rpc.Errorf(msg.CodeDenied, "passkey not accepted: %s", describe(err))
	}
	if !cred.Flags.UserVerified {
		return msg.RegisterFinishReply{}, rpc.Errorf(msg.CodeDenied, "passkey not accepted: the authenticator did not verify the user")
	}
	data, err := json.Marshal(cred)
	if err != nil {
		return msg.RegisterFinishReply{}, fmt.Errorf("auth: encode credential: %w", err)
	}
	err = s.store.Register(th, store.Credential{ID: cred.ID, User: u.Name, Name: a.Name, Data: data, SignCount: cred.Authenticator.SignCount}, now)
	if err != nil {
		return msg.RegisterFinishReply{}, s.storeErr("register", err)
	}
	s.log.Info("auth: passkey registered", "user", u.Name, "credential", fmt.Sprintf("%x", cred.ID))
	return msg.RegisterFinishReply{User: u.Name, CredentialID: cred.ID}, nil
}

// --- login -------------------------------------------------------------------

func (s *Service) loginBegin(a msg.LoginBegin) (msg.LoginBeginReply, error) {
	now := s.cfg.Now()
	var (
		assertion *protocol.CredentialAssertion
		sd        *webauthn.SessionData
		err       error
	)
	if a.User != "" {
		if err := names.CheckSluiceUser(a.User); err != nil {
			return msg.LoginBeginReply{}, rpc.Errorf(rpc.CodeBadRequest, "%v", err)
		}
		u, err := s.store.User(a.User)
		if err != nil {
			return msg.LoginBeginReply{}, s.storeErr("login", err)
		}
		wu, err := s.loadUser(u)
		if err != nil {
			return msg.LoginBeginReply{}, s.storeErr("load credentials", err)
		}
		if len(wu.creds) == 0 {
			return msg.LoginBeginReply{}, rpc.Errorf(msg.CodeNotFound, "%s has no passkey yet", a.User)
		}
		assertion, sd, err = s.wa.BeginLogin(wu)
		if err != nil {
			return msg.LoginBeginReply{}, fmt.Errorf("auth: begin login for %s: %w", a.User, err)
		}
	} else {
		assertion, sd, err = s.wa.BeginDiscoverableLogin()
		if err != nil {
			return msg.LoginBeginReply{}, fmt.Errorf("auth: begin login: %w", err)
		}
	}
	opts, err := json.Marshal(assertion)
	if err != nil {
		return msg.LoginBeginReply{}, fmt.Errorf("auth: encode request options: %w", err)
	}
	state, err := s.sealState(kindLogin, sd, ceremony{User: a.User}, now)
	if err != nil {
		return msg.LoginBeginReply{}, err
	}
	return msg.LoginBeginReply{Options: opts, State: state}, nil
}

func (s *Service) loginFinish(a msg.LoginFinish) (msg.LoginFinishReply, error) {
	if len(a.Assertion) == 0 || len(a.Assertion) > maxCredentialJSON {
		return msg.LoginFinishReply{}, rpc.Errorf(rpc.CodeBadRequest, "assertion of %d bytes, want 1..%d", len(a.Assertion), maxCredentialJSON)
	}
	now := s.cfg.Now()
	c, sd, expires, err := s.openState(kindLogin, a.State, now)
	if err != nil {
		return msg.LoginFinishReply{}, err
	}
	ch := sha256.Sum256([]byte("sluice login challenge\x00" + sd.Challenge))
	if used, err := s.store.ChallengeUsed(ch[:], now); err != nil {
		return msg.LoginFinishReply{}, s.storeErr("login", err)
	} else if used {
		s.log.Warn("auth: login refused: challenge replayed", "user", c.User)
		return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeDenied, "this sign-in attempt was already used; start again")
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(a.Assertion)
	if err != nil {
		return msg.LoginFinishReply{}, rpc.Errorf(rpc.CodeBadRequest, "assertion: %s", describe(err))
	}

	var user *waUser
	var cred *webauthn.Credential
	if c.User == "" {
		var wu webauthn.User
		wu, cred, err = s.wa.ValidatePasskeyLogin(func(rawID, handle []byte) (webauthn.User, error) {
			u, err := s.store.UserByHandle(handle)
			if err != nil {
				return nil, err
			}
			wu, err := s.loadUser(u)
			if err != nil {
				return nil, err
			}
			return wu, nil
		}, sd, parsed)
		if err == nil {
			user = wu.(*waUser)
		}
	} else {
		var u store.User
		if u, err = s.store.User(c.User); err != nil {
			return msg.LoginFinishReply{}, s.storeErr("login", err)
		}
		if user, err = s.loadUser(u); err != nil {
			return msg.LoginFinishReply{}, s.storeErr("load credentials", err)
		}
		cred, err = s.wa.ValidateLogin(user, sd, parsed)
	}
	if err != nil {
		s.log.Warn("auth: login refused", "user", c.User, "credential", fmt.Sprintf("%x", parsed.RawID), "err", describeDev(err))
		if errors.Is(err, store.ErrNotFound) {
			return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeNotFound, "this passkey is not registered here")
		}
		if errors.Is(err, store.ErrBusy) {
			return msg.LoginFinishReply{}, s.storeErr("login", err)
		}
		return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeDenied, "passkey not accepted: %s", describe(err))
	}
	name := user.u.Name
	if user.u.Disabled {
		s.log.Warn("auth: login refused: user disabled", "user", name, "credential", fmt.Sprintf("%x", cred.ID))
		return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeDenied, "this account is disabled; ask an admin")
	}
	if cred.Authenticator.CloneWarning {
		s.log.Warn("auth: login refused: signature counter did not increase, authenticator may be cloned",
			"user", name, "credential", fmt.Sprintf("%x", cred.ID), "presented", parsed.Response.AuthenticatorData.Counter)
		return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeDenied, "passkey refused: its signature counter went backwards, the authenticator may have been copied")
	}
	data, err := json.Marshal(cred)
	if err != nil {
		return msg.LoginFinishReply{}, fmt.Errorf("auth: encode credential: %w", err)
	}
	if err := s.store.Use(cred.ID, ch[:], expires, cred.Authenticator.SignCount, data, now); err != nil {
		switch {
		case errors.Is(err, store.ErrReplay):
			s.log.Warn("auth: login refused: challenge replayed", "user", name)
			return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeDenied, "this sign-in attempt was already used; start again")
		case errors.Is(err, store.ErrCounter):
			s.log.Warn("auth: login refused: counter raced", "user", name, "err", err)
			return msg.LoginFinishReply{}, rpc.Errorf(msg.CodeDenied, "passkey refused: its signature counter went backwards, the authenticator may have been copied")
		}
		return msg.LoginFinishReply{}, s.storeErr("login", err)
	}
	g, err := grant.SignCredential(s.cfg.GrantKey, name, cred.ID, now, s.cfg.GrantLifetime)
	if err != nil {
		return msg.LoginFinishReply{}, fmt.Errorf("auth: grant for %s: %w", name, err)
	}
	s.log.Info("auth: signed in", "user", name, "credential", fmt.Sprintf("%x", cred.ID), "expires", time.UnixMilli(g.Expires).UTC())
	return msg.LoginFinishReply{Grant: g}, nil
}

// storeErr maps store errors to what the caller can act on.
func (s *Service) storeErr(what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound) && what == "register":
		return rpc.Errorf(msg.CodeNotFound, "enrollment token unknown or already used; ask an admin for a new link")
	case errors.Is(err, store.ErrExpired) && what == "register":
		return rpc.Errorf(msg.CodeNotFound, "enrollment token expired; ask an admin for a new link")
	case errors.Is(err, store.ErrNotFound):
		return rpc.Errorf(msg.CodeNotFound, "no such user or passkey")
	case errors.Is(err, store.ErrExists):
		return rpc.Errorf(msg.CodeDenied, "this passkey is already registered")
	case errors.Is(err, store.ErrBusy):
		s.log.Warn("auth: credential store busy", "op", what, "err", err)
		return rpc.Errorf(msg.CodeBusy, "%s: the credential store is busy; try again", what)
	case errors.Is(err, store.ErrFull):
		s.log.Error("auth: state directory full", "op", what, "err", err)
		return rpc.Errorf(msg.CodeFailed, "%s not saved: auth's state directory is full (no space left on device)", what)
	}
	return err
}

// describe is a go-webauthn error as fit for the caller: its summary and
// details, not the developer info (which is logged).
func describe(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		if pe.Details != "" {
			return pe.Details
		}
		return pe.Type
	}
	return err.Error()
}

func describeDev(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.DevInfo != "" {
		return pe.Details + ": " + pe.DevInfo
	}
	return err.Error()
}

// StateDir picks the state directory: flag value, else the first of
// $STATE_DIRECTORY (systemd may list several, colon-separated).
func StateDir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	d := os.Getenv("STATE_DIRECTORY")
	if i := bytes.IndexByte([]byte(d), ':'); i >= 0 {
		d = d[:i]
	}
	return d
}
