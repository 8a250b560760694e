// Package softauthn is a software WebAuthn authenticator and client for
// tests: it answers navigator.credentials.create and .get options with the
// JSON a browser would send back, using ES256 (P-256) keys it keeps in
// memory. Attestation is "none"; every credential is discoverable (a
// resident key), and user presence and verification are asserted unless a
// knob says otherwise.
//
// Options may be given as the server sends them ({"publicKey": {...}}) or
// as the bare PublicKeyCredential*OptionsJSON inside; the replies are in
// the PublicKeyCredential.toJSON() shape that go-webauthn's
// protocol.ParseCredentialCreationResponseBody and
// ParseCredentialRequestResponseBody accept.
package softauthn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Authenticator flags in authenticator data.
const (
	flagUP = 0x01 // user present
	flagUV = 0x04 // user verified
	flagAT = 0x40 // attested credential data included
)

// coseES256 is the COSE algorithm identifier of ECDSA P-256 with SHA-256.
const coseES256 = -7

// Errors a test may expect.
var (
	ErrNoCredential = errors.New("softauthn: no credential for this request")           // NotAllowedError in a browser
	ErrExcluded     = errors.New("softauthn: a credential here is on the exclude list") // InvalidStateError
	ErrUnsupported  = errors.New("softauthn: no supported algorithm offered (want ES256)")
	ErrRPID         = errors.New("softauthn: relying party ID does not match")
)

// Credential is one key the authenticator holds. Fields are exported so a
// test can tamper with them (say, set SignCount back).
type Credential struct {
	ID         []byte
	RPID       string
	UserHandle []byte
	UserName   string
	Key        *ecdsa.PrivateKey
	SignCount  uint32
}

// Authenticator is a software authenticator together with the browser
// that talks to it: the browser part fills in the client data (origin,
// challenge, type). The knobs are for negative tests; the zero values of
// the knobs are honest behaviour.
type Authenticator struct {
	// RPID is the relying party ID the authenticator serves and the
	// browser accepts; Origin is what the browser puts in client data.
	RPID   string
	Origin string

	// WrongKey: sign assertions with a fresh key that was never registered.
	WrongKey bool
	// NoUV: do not set the user-verified flag (no PIN or biometric).
	NoUV bool
	// NoUP: do not set the user-present flag.
	NoUP bool
	// CounterStep is added to a credential's signature counter on every
	// assertion; New sets 1. Zero models an authenticator without a
	// counter.
	CounterStep uint32
	// OmitUserHandle: leave userHandle out of assertions.
	OmitUserHandle bool
	// Use picks which discoverable credential answers a request with an
	// empty allow list (by ID); nil means the most recently created.
	Use []byte
	// ChallengeOverride, if set, replaces the challenge in client data
	// (an assertion made for another ceremony).
	ChallengeOverride []byte

	mu    sync.Mutex
	creds []*Credential
}

// New returns an honest authenticator for rpID used from origin.
func New(rpID, origin string) *Authenticator {
	return &Authenticator{RPID: rpID, Origin: origin, CounterStep: 1}
}

// Credentials returns the credentials held, oldest first. They are the
// authenticator's own: changing one changes what it will sign with.
func (a *Authenticator) Credentials() []*Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*Credential(nil), a.creds...)
}

// Clone returns an authenticator holding copies of the same keys and
// counters, as an attacker who copied the device would.
func (a *Authenticator) Clone() *Authenticator {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := &Authenticator{RPID: a.RPID, Origin: a.Origin, CounterStep: a.CounterStep}
	for _, c := range a.creds {
		cc := *c
		b.creds = append(b.creds, &cc)
	}
	return b
}

// b64 is base64url without padding, as WebAuthn JSON uses it.
var b64 = base64.RawURLEncoding

// bytesB64 decodes base64url with or without padding.
type bytesB64 []byte

func (b *bytesB64) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	s = trimPad(s)
	v, err := b64.DecodeString(s)
	if err != nil {
		return fmt.Errorf("softauthn: bad base64url %q: %w", s, err)
	}
	*b = v
	return nil
}

func trimPad(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}

type descriptor struct {
	Type string   `json:"type"`
	ID   bytesB64 `json:"id"`
}

type creationOptions struct {
	RP struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"rp"`
	User struct {
		ID          bytesB64 `json:"id"`
		Name        string   `json:"name"`
		DisplayName string   `json:"displayName"`
	} `json:"user"`
	Challenge        bytesB64 `json:"challenge"`
	PubKeyCredParams []struct {
		Type string `json:"type"`
		Alg  int64  `json:"alg"`
	} `json:"pubKeyCredParams"`
	ExcludeCredentials []descriptor `json:"excludeCredentials"`
}

type requestOptions struct {
	Challenge        bytesB64     `json:"challenge"`
	RPID             string       `json:"rpId"`
	AllowCredentials []descriptor `json:"allowCredentials"`
	UserVerification string       `json:"userVerification"`
}

// unwrap returns the inner options of {"publicKey": {...}}, or the input.
func unwrap(optionsJSON []byte) []byte {
	var outer struct {
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if json.Unmarshal(optionsJSON, &outer) == nil && len(outer.PublicKey) > 0 {
		return outer.PublicKey
	}
	return optionsJSON
}

// Register creates a new credential for creation options and returns the
// registration response JSON.
func (a *Authenticator) Register(optionsJSON []byte) ([]byte, error) {
	var o creationOptions
	if err := json.Unmarshal(unwrap(optionsJSON), &o); err != nil {
		return nil, fmt.Errorf("softauthn: creation options: %w", err)
	}
	if len(o.Challenge) == 0 || len(o.User.ID) == 0 {
		return nil, errors.New("softauthn: creation options without challenge or user.id")
	}
	rpID := o.RP.ID
	if rpID == "" {
		rpID = a.RPID
	}
	if rpID != a.RPID {
		return nil, fmt.Errorf("%w: options say %q, we serve %q", ErrRPID, rpID, a.RPID)
	}
	es256 := false
	for _, p := range o.PubKeyCredParams {
		es256 = es256 || (p.Type == "public-key" && p.Alg == coseES256)
	}
	if !es256 {
		return nil, ErrUnsupported
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ex := range o.ExcludeCredentials {
		for _, c := range a.creds {
			if c.RPID == rpID && bytes.Equal(c.ID, ex.ID) {
				return nil, ErrExcluded
			}
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cred := &Credential{ID: make([]byte, 32), RPID: rpID, UserHandle: []byte(o.User.ID), UserName: o.User.Name, Key: key}
	rand.Read(cred.ID)

	cose, err := coseKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	authData := a.authData(rpID, flagAT, 0)
	authData = append(authData, make([]byte, 16)...) // AAGUID: none
	authData = binary.BigEndian.AppendUint16(authData, uint16(len(cred.ID)))
	authData = append(authData, cred.ID...)
	authData = append(authData, cose...)

	attObj, err := webauthncbor.Marshal(struct {
		Fmt      string         `cbor:"fmt"`
		AttStmt  map[string]any `cbor:"attStmt"`
		AuthData []byte         `cbor:"authData"`
	}{"none", map[string]any{}, authData})
	if err != nil {
		return nil, fmt.Errorf("softauthn: attestation object: %w", err)
	}
	clientData, err := a.clientData("webauthn.create", o.Challenge)
	if err != nil {
		return nil, err
	}
	// Only now is the credential kept: a failed create leaves nothing.
	a.creds = append(a.creds, cred)
	return json.Marshal(map[string]any{
		"id":                      b64.EncodeToString(cred.ID),
		"rawId":                   b64.EncodeToString(cred.ID),
		"type":                    "public-key",
		"authenticatorAttachment": "cross-platform",
		"clientExtensionResults":  map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"attestationObject": b64.EncodeToString(attObj),
			"transports":        []string{"usb"},
		},
	})
}

// Login answers request options with an assertion JSON, from a credential
// on the allow list or, with an empty list, a discoverable one for the RP.
func (a *Authenticator) Login(optionsJSON []byte) ([]byte, error) {
	var o requestOptions
	if err := json.Unmarshal(unwrap(optionsJSON), &o); err != nil {
		return nil, fmt.Errorf("softauthn: request options: %w", err)
	}
	if len(o.Challenge) == 0 {
		return nil, errors.New("softauthn: request options without challenge")
	}
	rpID := o.RPID
	if rpID == "" {
		rpID = a.RPID
	}
	if rpID != a.RPID {
		return nil, fmt.Errorf("%w: options say %q, we serve %q", ErrRPID, rpID, a.RPID)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cred := a.pick(rpID, o.AllowCredentials)
	if cred == nil {
		return nil, ErrNoCredential
	}
	cred.SignCount += a.CounterStep

	authData := a.authData(rpID, 0, cred.SignCount)
	clientData, err := a.clientData("webauthn.get", o.Challenge)
	if err != nil {
		return nil, err
	}
	key := cred.Key
	if a.WrongKey {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	cdh := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(bytes.Clone(authData), cdh[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	resp := map[string]any{
		"clientDataJSON":    b64.EncodeToString(clientData),
		"authenticatorData": b64.EncodeToString(authData),
		"signature":         b64.EncodeToString(sig),
	}
	if !a.OmitUserHandle {
		resp["userHandle"] = b64.EncodeToString(cred.UserHandle)
	}
	return json.Marshal(map[string]any{
		"id":                      b64.EncodeToString(cred.ID),
		"rawId":                   b64.EncodeToString(cred.ID),
		"type":                    "public-key",
		"authenticatorAttachment": "cross-platform",
		"clientExtensionResults":  map[string]any{},
		"response":                resp,
	})
}

func (a *Authenticator) pick(rpID string, allow []descriptor) *Credential {
	if len(allow) > 0 {
		for _, d := range allow {
			for _, c := range a.creds {
				if c.RPID == rpID && bytes.Equal(c.ID, d.ID) {
					return c
				}
			}
		}
		return nil
	}
	for i := len(a.creds) - 1; i >= 0; i-- {
		c := a.creds[i]
		if c.RPID == rpID && (a.Use == nil || bytes.Equal(c.ID, a.Use)) {
			return c
		}
	}
	return nil
}

// authData builds rpIdHash, flags and counter; extra flags are ORed in.
func (a *Authenticator) authData(rpID string, extra byte, count uint32) []byte {
	h := sha256.Sum256([]byte(rpID))
	flags := extra
	if !a.NoUP {
		flags |= flagUP
	}
	if !a.NoUV {
		flags |= flagUV
	}
	b := append(h[:], flags)
	return binary.BigEndian.AppendUint32(b, count)
}

func (a *Authenticator) clientData(typ string, challenge []byte) ([]byte, error) {
	if a.ChallengeOverride != nil {
		challenge = a.ChallengeOverride
	}
	return json.Marshal(struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}{typ, b64.EncodeToString(challenge), a.Origin, false})
}

// coseKey encodes an EC2 P-256 public key as a COSE_Key.
func coseKey(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	k := webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{
			KeyType:   int64(webauthncose.EllipticKey),
			Algorithm: int64(webauthncose.AlgES256),
		},
		Curve:  int64(webauthncose.P256),
		XCoord: raw[1:33],
		YCoord: raw[33:65],
	}
	b, err := webauthncbor.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("softauthn: COSE key: %w", err)
	}
	return b, nil
}
