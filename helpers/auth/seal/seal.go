// Package seal protects ceremony state that auth hands to its caller
// between a WebAuthn begin and finish call. Each call may be served by a
// fresh process (systemd Accept=yes), so the state cannot stay in memory:
// it travels with the caller, encrypted and authenticated with a key only
// auth holds, bound to the kind of ceremony, and with a short expiry.
package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the size of a seal key file.
const KeySize = chacha20poly1305.KeySize

// version is the first byte of every sealed box; a format change bumps it.
const version = 1

// context prefixes the additional data, so a box made for another purpose
// with the same key could never open here.
const context = "sluice 2026-11-24 auth ceremony state v1\x00"

// Errors Open returns. ErrInvalid covers tampering, another key and another
// kind alike: an AEAD cannot tell them apart, and the caller need not.
var (
	ErrInvalid = errors.New("seal: state invalid, tampered with, or for another ceremony")
	ErrExpired = errors.New("seal: state expired")
)

// Sealer seals and opens ceremony state with one key.
type Sealer struct {
	aead cipher.AEAD
}

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: key of %d bytes, want %d", len(key), KeySize)
	}
	// XChaCha20-Poly1305: its 192-bit nonces can be drawn at random for as
	// many boxes as we will ever make, with no counter to keep across the
	// many short-lived processes sharing the key.
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns a box holding payload for ceremony kind, good until expires.
// Layout: version, expiry (unix ms, 8 bytes BE, in the clear but
// authenticated), nonce, ciphertext.
func (s *Sealer) Seal(kind string, payload []byte, expires time.Time) []byte {
	hdr := make([]byte, 0, 1+8+s.aead.NonceSize())
	hdr = append(hdr, version)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(expires.UnixMilli()))
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	box := append(hdr, nonce...)
	return s.aead.Seal(box, nonce, payload, ad(kind, box[:9]))
}

// Open checks a box made by Seal for kind and returns its payload and
// expiry. An expired box is reported as such only once it has proved
// authentic.
func (s *Sealer) Open(kind string, box []byte, now time.Time) ([]byte, time.Time, error) {
	ns := s.aead.NonceSize()
	if len(box) < 1+8+ns+s.aead.Overhead() || box[0] != version {
		return nil, time.Time{}, ErrInvalid
	}
	nonce := box[9 : 9+ns]
	payload, err := s.aead.Open(nil, nonce, box[9+ns:], ad(kind, box[:9]))
	if err != nil {
		return nil, time.Time{}, ErrInvalid
	}
	expires := time.UnixMilli(int64(binary.BigEndian.Uint64(box[1:9])))
	if !now.Before(expires) {
		return nil, expires, ErrExpired
	}
	return payload, expires, nil
}

func ad(kind string, hdr []byte) []byte {
	b := make([]byte, 0, len(context)+4+len(kind)+len(hdr))
	b = append(b, context...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(kind)))
	b = append(b, kind...)
	return append(b, hdr...)
}

// LoadOrCreateKey reads the key file at path, creating it (mode 0600, with
// fresh random bytes) if it does not exist. Creation is atomic: the key is
// written and synced under a temporary name and then linked into place, so
// processes racing to create it all end up with the one that won, and a
// crash never leaves a short key behind.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := loadKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".seal-key-*")
	if err != nil {
		return nil, fmt.Errorf("seal: create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	key = make([]byte, KeySize)
	rand.Read(key)
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("seal: create key: %w", err)
	}
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("seal: create key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadKey(path)
		}
		return nil, fmt.Errorf("seal: create key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return key, nil
}

func loadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key: %w", err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("seal: key %s has %d bytes, want %d", path, len(b), KeySize)
	}
	return b, nil
}
