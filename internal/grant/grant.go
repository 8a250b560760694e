// Package grant signs and verifies sign-in grants: the proof, checkable by
// every holder of the grant key (auth, policy, ptystore, record), that a
// user completed a passkey login. A grant is a keyed BLAKE3 MAC over a
// canonical encoding of its fields; nothing about it is kept server side, so
// any helper process, however short-lived, can check one.
//
// Every helper that takes a grant checks it with a Verifier (MAC, times,
// revocation list, user name) and answers a refusal with Refusal, so the
// rules and their order live here once.
package grant

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"lukechampine.com/blake3"

	"sluice/msg"
)

// Sizes of the fixed-length fields.
const (
	KeySize   = 32
	NonceSize = 16
	MACSize   = 32
	// MaxUser caps the user name a grant may carry. Auth enforces a
	// stricter charset; this only keeps verification bounded.
	MaxUser = 256
	// MaxCredential is WebAuthn's limit on a credential ID.
	MaxCredential = 1023
)

// DefaultLifetime is how long a grant is good for unless told otherwise.
const DefaultLifetime = 12 * time.Hour

// MaxSkew is how far in the future a grant's issue time may lie before
// Verify refuses it: clocks of the helpers may differ a little, never much.
const MaxSkew = time.Minute

// context separates this MAC from any other use of the same key. It is
// part of the MAC input, length-prefixed like every field.
const context = "sluice 2026-11-24 grant v2"

// Errors Verify returns; test with errors.Is. ErrForged covers every grant
// whose MAC does not match (wrong key, any altered field, malformed sizes);
// ErrExpired and ErrNotYetValid are only reported for authentic grants.
var (
	ErrForged      = errors.New("grant: forged or corrupted")
	ErrExpired     = errors.New("grant: expired")
	ErrNotYetValid = errors.New("grant: issued in the future")
)

// Key is the 32-byte grant key shared by the helpers that sign or check
// grants.
type Key [KeySize]byte

// LoadKey reads a grant key file: exactly 32 raw bytes, or 64 hex digits
// with an optional trailing newline (easier to provision by hand).
func LoadKey(path string) (Key, error) {
	var k Key
	b, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("grant: key: %w", err)
	}
	return ParseKey(b)
}

// ParseKey accepts the two forms LoadKey reads.
func ParseKey(b []byte) (Key, error) {
	var k Key
	switch {
	case len(b) == KeySize:
		copy(k[:], b)
	case len(strings.TrimRight(string(b), "\n")) == 2*KeySize:
		if _, err := hex.Decode(k[:], []byte(strings.TrimRight(string(b), "\n"))); err != nil {
			return Key{}, fmt.Errorf("grant: key: %w", err)
		}
	default:
		return k, fmt.Errorf("grant: key of %d bytes, want %d raw bytes or %d hex digits", len(b), KeySize, 2*KeySize)
	}
	if k == (Key{}) {
		return Key{}, errors.New("grant: key is all zeros")
	}
	return k, nil
}

// NewKey returns a fresh random key.
func NewKey() Key {
	var k Key
	rand.Read(k[:])
	return k
}

// WriteKeyFile creates a new random key file at path, mode 0600. It never
// overwrites: an existing file is an error, so a running suite's key cannot
// be replaced by accident.
func WriteKeyFile(path string) (Key, error) {
	k := NewKey()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Key{}, fmt.Errorf("grant: write key: %w", err)
	}
	_, err = f.Write(k[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return Key{}, fmt.Errorf("grant: write key: %w", err)
	}
	return k, nil
}

// Sign issues a grant for user that names no passkey, valid from issued
// for lifetime: for tools and tests. Auth signs with SignCredential, so
// that revoking the passkey revokes the grant.
func Sign(key Key, user string, issued time.Time, lifetime time.Duration) (msg.Grant, error) {
	return SignCredential(key, user, nil, issued, lifetime)
}

// SignCredential issues a grant for user's sign-in with the passkey
// credential, valid from issued for lifetime.
func SignCredential(key Key, user string, credential []byte, issued time.Time, lifetime time.Duration) (msg.Grant, error) {
	if user == "" || len(user) > MaxUser {
		return msg.Grant{}, fmt.Errorf("grant: user name of %d bytes, want 1..%d", len(user), MaxUser)
	}
	if len(credential) > MaxCredential {
		return msg.Grant{}, fmt.Errorf("grant: credential ID of %d bytes, want at most %d", len(credential), MaxCredential)
	}
	if lifetime <= 0 {
		return msg.Grant{}, fmt.Errorf("grant: lifetime %v is not positive", lifetime)
	}
	g := msg.Grant{
		User:       user,
		Credential: credential,
		Issued:     issued.UnixMilli(),
		Expires:    issued.Add(lifetime).UnixMilli(),
		Nonce:      make([]byte, NonceSize),
	}
	rand.Read(g.Nonce)
	g.MAC = mac(key, g)
	return g, nil
}

// Verify checks that g was made with key and is valid at now. The MAC is
// checked first and in constant time, so nothing about a forged grant's
// times is ever reported.
func Verify(key Key, g msg.Grant, now time.Time) error {
	if len(g.MAC) != MACSize || len(g.Nonce) != NonceSize || g.User == "" || len(g.User) > MaxUser || len(g.Credential) > MaxCredential {
		return ErrForged
	}
	want := mac(key, g)
	if subtle.ConstantTimeCompare(want, g.MAC) != 1 {
		return ErrForged
	}
	// Authentic from here on: only a signer with the key could have made
	// these times, so they are reported as they are.
	if g.Expires <= g.Issued {
		return fmt.Errorf("%w: expires %d not after issued %d", ErrExpired, g.Expires, g.Issued)
	}
	n := now.UnixMilli()
	if g.Issued > n+MaxSkew.Milliseconds() {
		return fmt.Errorf("%w: issued %s, now %s", ErrNotYetValid, time.UnixMilli(g.Issued).UTC(), now.UTC())
	}
	if n >= g.Expires {
		return fmt.Errorf("%w: at %s", ErrExpired, time.UnixMilli(g.Expires).UTC())
	}
	return nil
}

// mac computes the keyed BLAKE3 over the canonical encoding: every field
// in a fixed order, variable-length ones behind a 4-byte big-endian length,
// so no two different grants encode to the same bytes.
func mac(key Key, g msg.Grant) []byte {
	h := blake3.New(MACSize, key[:])
	buf := make([]byte, 0, 4+len(context)+4+len(g.User)+4+len(g.Credential)+8+8+4+len(g.Nonce))
	buf = appendBytes(buf, []byte(context))
	buf = appendBytes(buf, []byte(g.User))
	buf = appendBytes(buf, g.Credential)
	buf = binary.BigEndian.AppendUint64(buf, uint64(g.Issued))
	buf = binary.BigEndian.AppendUint64(buf, uint64(g.Expires))
	buf = appendBytes(buf, g.Nonce)
	h.Write(buf)
	return h.Sum(nil)
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}
