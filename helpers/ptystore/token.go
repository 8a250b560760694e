package ptystore

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"lukechampine.com/blake3"

	"sluice/internal/grant"
	"sluice/msg"
)

// A share token lets a signed-in user other than the owner get one
// session's pty in the mode the owner chose. It is
//
//	version(1) mode(1) epoch(4, big endian) mac(32)
//
// where mac is keyed BLAKE3 over the session's id, owner and creation time,
// the mode and the epoch. The epoch is the session's share epoch, bumped on
// every change of mode, so setting a session private (or changing its mode)
// revokes every token made before. Nothing per token is kept: the epoch is
// in the fd's name in the fd store, so tokens survive a restart and
// revocations do too.

const (
	tokenVersion = 1
	tokenLen     = 1 + 1 + 4 + 32
	// shareContext derives the token key from the grant key, so a token MAC
	// can never be mistaken for a grant MAC or anything else under it.
	shareContext = "sluice 2026-11-24 ptystore share token v1"
)

// ErrBadToken covers every token that does not verify: forged, for another
// session, or revoked by a later change of the session's mode.
var ErrBadToken = errors.New("share token invalid or revoked")

// TokenKey derives the share token key from the grant key.
func TokenKey(k grant.Key) [32]byte {
	var out [32]byte
	blake3.DeriveKey(out[:], shareContext, k[:])
	return out
}

func tokenMAC(key *[32]byte, info msg.SessionInfo, mode uint8, epoch uint32) []byte {
	h := blake3.New(32, key[:])
	var buf []byte
	buf = appendLP(buf, []byte(info.ID))
	buf = appendLP(buf, []byte(info.Owner))
	buf = binary.BigEndian.AppendUint64(buf, uint64(info.Created))
	buf = append(buf, mode)
	buf = binary.BigEndian.AppendUint32(buf, epoch)
	h.Write(buf)
	return h.Sum(nil)
}

func appendLP(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// makeToken returns a token for the session in its current mode and epoch.
func makeToken(key *[32]byte, info msg.SessionInfo, epoch uint32) ([]byte, error) {
	mode, ok := sharingCode(info.Sharing)
	if !ok || info.Sharing == msg.SharePrivate {
		return nil, fmt.Errorf("no token for sharing mode %q", info.Sharing)
	}
	t := make([]byte, 0, tokenLen)
	t = append(t, tokenVersion, mode)
	t = binary.BigEndian.AppendUint32(t, epoch)
	return append(t, tokenMAC(key, info, mode, epoch)...), nil
}

// checkToken verifies a token against the session's current mode and
// epoch and returns the mode it grants.
func checkToken(key *[32]byte, token []byte, info msg.SessionInfo, epoch uint32) (string, error) {
	if len(token) != tokenLen || token[0] != tokenVersion {
		return "", ErrBadToken
	}
	mode := token[1]
	if int(mode) >= len(sharingCodes) {
		return "", ErrBadToken
	}
	want := tokenMAC(key, info, mode, binary.BigEndian.Uint32(token[2:6]))
	if subtle.ConstantTimeCompare(want, token[6:]) != 1 {
		return "", ErrBadToken
	}
	// Authentic; now is it still current?
	if binary.BigEndian.Uint32(token[2:6]) != epoch || sharingCodes[mode] != info.Sharing || info.Sharing == msg.SharePrivate {
		return "", fmt.Errorf("%w: revoked", ErrBadToken)
	}
	return info.Sharing, nil
}
