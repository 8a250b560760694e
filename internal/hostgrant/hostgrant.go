// Package hostgrant signs and verifies host grants (msg.HostGrant): the
// gateway's auth helper, alone holding an Ed25519 private key, turns a
// grant it verified into a short-lived grant for one named host; that
// host's policy and ptystore verify it with the public key alone. Unlike
// the grant key (a MAC key every checker holds), nothing a host has lets
// it make a host grant, for itself or for any other host.
package hostgrant

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"sluice/internal/grant"
	"sluice/internal/names"
	"sluice/msg"
)

// DefaultLifetime is how long a host grant is good for: long enough for
// one ssh connection to come up and make its call, short enough that a
// leaked one is soon worthless.
const DefaultLifetime = 2 * time.Minute

// MaxLifetime is the longest validity Verify accepts, whatever the
// signer wrote.
const MaxLifetime = 5 * time.Minute

// The nonce size, the bounds on user and credential and the clock skew
// allowed are a grant's (grant.NonceSize, grant.MaxUser,
// grant.MaxCredential, grant.MaxSkew): a host grant carries what a grant
// does, for one host.

// context keeps these signatures apart from any other use of the key,
// and adminContext an admin's grants apart from a user's.
const (
	context      = "sluice 2026-11-24 host grant v1"
	adminContext = "sluice 2026-12-04 host admin grant v1"
)

// Errors Verify returns; test with errors.Is.
var (
	ErrForged      = errors.New("hostgrant: forged or corrupted")
	ErrWrongHost   = errors.New("hostgrant: for another host")
	ErrExpired     = errors.New("hostgrant: expired")
	ErrNotYetValid = errors.New("hostgrant: issued in the future")
	ErrTooLong     = errors.New("hostgrant: lifetime over the maximum")
)

// Sign makes a host grant for user (and the passkey credential the grant
// came from) on host, valid from issued for lifetime.
func Sign(key ed25519.PrivateKey, user string, credential []byte, host string, issued time.Time, lifetime time.Duration) (msg.HostGrant, error) {
	return sign(key, user, credential, host, issued, lifetime, false)
}

// SignAdmin makes an admin host grant for the gateway admin named admin
// on host: what a host's ptystore, if it takes admin calls from the
// gateway, needs to list and end its sessions.
func SignAdmin(key ed25519.PrivateKey, admin, host string, issued time.Time, lifetime time.Duration) (msg.HostGrant, error) {
	return sign(key, admin, nil, host, issued, lifetime, true)
}

func sign(key ed25519.PrivateKey, user string, credential []byte, host string, issued time.Time, lifetime time.Duration, admin bool) (msg.HostGrant, error) {
	if !names.SluiceUser(user) {
		return msg.HostGrant{}, fmt.Errorf("hostgrant: invalid user %q", user)
	}
	if !names.Machine(host) || host == msg.HostMachine {
		return msg.HostGrant{}, fmt.Errorf("hostgrant: invalid host name %q", host)
	}
	if len(credential) > grant.MaxCredential {
		return msg.HostGrant{}, fmt.Errorf("hostgrant: credential of %d bytes", len(credential))
	}
	if lifetime <= 0 || lifetime > MaxLifetime {
		return msg.HostGrant{}, fmt.Errorf("hostgrant: lifetime %v, want (0, %v]", lifetime, MaxLifetime)
	}
	if len(key) != ed25519.PrivateKeySize {
		return msg.HostGrant{}, errors.New("hostgrant: no signing key")
	}
	g := msg.HostGrant{User: user, Credential: credential, Host: host,
		Issued: issued.UnixMilli(), Expires: issued.Add(lifetime).UnixMilli(), Nonce: make([]byte, grant.NonceSize), Admin: admin}
	rand.Read(g.Nonce)
	g.Sig = ed25519.Sign(key, message(g))
	return g, nil
}

// Verify checks g's signature with pub, that it names host, and that it
// is valid at now. The signature is checked first: nothing about a
// forged grant is reported beyond that.
func Verify(pub ed25519.PublicKey, host string, g msg.HostGrant, now time.Time) error {
	if len(pub) != ed25519.PublicKeySize || len(g.Sig) != ed25519.SignatureSize || len(g.Nonce) != grant.NonceSize ||
		g.User == "" || len(g.User) > grant.MaxUser || len(g.Credential) > grant.MaxCredential || len(g.Host) > 256 {
		return ErrForged
	}
	if !ed25519.Verify(pub, message(g), g.Sig) {
		return ErrForged
	}
	if g.Host != host {
		return fmt.Errorf("%w: grant for %q, this is %q", ErrWrongHost, g.Host, host)
	}
	if g.Expires <= g.Issued {
		return fmt.Errorf("%w: expires before issued", ErrExpired)
	}
	if time.Duration(g.Expires-g.Issued)*time.Millisecond > MaxLifetime {
		return fmt.Errorf("%w: %v", ErrTooLong, time.Duration(g.Expires-g.Issued)*time.Millisecond)
	}
	n := now.UnixMilli()
	if g.Issued > n+grant.MaxSkew.Milliseconds() {
		return ErrNotYetValid
	}
	if n >= g.Expires {
		return fmt.Errorf("%w: at %s", ErrExpired, time.UnixMilli(g.Expires).UTC())
	}
	return nil
}

// message is the signed encoding: every field in a fixed order, the
// variable ones length-prefixed, so no two grants encode alike.
func message(g msg.HostGrant) []byte {
	b := make([]byte, 0, 128+len(g.User)+len(g.Credential)+len(g.Host))
	ctx := context
	if g.Admin {
		ctx = adminContext
	}
	b = appendBytes(b, []byte(ctx))
	b = appendBytes(b, []byte(g.User))
	b = appendBytes(b, g.Credential)
	b = appendBytes(b, []byte(g.Host))
	b = binary.BigEndian.AppendUint64(b, uint64(g.Issued))
	b = binary.BigEndian.AppendUint64(b, uint64(g.Expires))
	return appendBytes(b, g.Nonce)
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// LoadOrCreateKey reads the signing key file (a 32-byte Ed25519 seed) at
// path, creating it (mode 0600, never overwriting) when it is missing.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("hostgrant: create key: %w", err)
		}
		_, err = f.Write(seed)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("hostgrant: create key: %w", err)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if err != nil {
		return nil, fmt.Errorf("hostgrant: key: %w", err)
	}
	if len(b) != ed25519.SeedSize {
		return nil, fmt.Errorf("hostgrant: key of %d bytes, want a %d-byte seed", len(b), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(b), nil
}

// PublicPrefix starts the one line of a gateway public key file.
const PublicPrefix = "sluice-gateway-ed25519 "

// FormatPublic is the public key file's line: PublicPrefix, base64.
func FormatPublic(pub ed25519.PublicKey) string {
	return PublicPrefix + base64.StdEncoding.EncodeToString(pub) + "\n"
}

// LoadPublic reads a public key file FormatPublic wrote.
func LoadPublic(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hostgrant: gateway key: %w", err)
	}
	return ParsePublic(string(b))
}

// ParsePublic parses FormatPublic's line.
func ParsePublic(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), strings.TrimSpace(PublicPrefix))
	if !ok {
		return nil, fmt.Errorf("hostgrant: gateway key: want %q then base64", strings.TrimSpace(PublicPrefix))
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("hostgrant: gateway key: not %d bytes of base64", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(k), nil
}
