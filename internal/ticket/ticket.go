// Package ticket signs and checks session tickets: policy's word, when it
// allows create-shell-session, for what the new session is (its id, owner,
// unix user, machine, creation time, shell pid) and which open file its fd
// is (kind, device, pts number or socket inode, as the kernel reports
// them). The frontend carries the ticket from policy to pty-put; ptystore
// recomputes it from the session info it is given and from asking the
// kernel about the fd it received, so a frontend cannot put a root shell
// under an unprivileged user's name and keep it out of revocation.
//
// The MAC is keyed BLAKE3 with the grant key, which policy and ptystore
// already hold, under its own context string, so no ticket is ever a grant
// nor the other way round.
package ticket

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"lukechampine.com/blake3"

	"sluice/internal/grant"
	"sluice/internal/pty"
	"sluice/internal/termsock"
	"sluice/msg"
)

// Lifetime is how long a ticket is good for: the frontend puts the session
// right after create, so a minute is plenty and a leaked ticket is soon
// worthless.
const Lifetime = time.Minute

// context separates the ticket's MAC from every other use of the key
// (grant's context differs).
const context = "sluice 2026-11-24 session ticket v1"

// Kinds of session fd.
const (
	KindPTY    = "pty"    // a pty master; Num is its pts number (TIOCGPTN)
	KindSocket = "socket" // a recorded session's socket (package termsock); Num is its inode
)

// Errors Verify returns; test with errors.Is. ErrForged covers every
// ticket whose MAC does not match the info and fd it came with.
var (
	ErrMissing = errors.New("ticket: missing")
	ErrForged  = errors.New("ticket: does not match the session or its fd")
	ErrExpired = errors.New("ticket: expired")
	ErrNoKey   = errors.New("ticket: no key")
)

// FD is an open file's identity as the kernel reports it. Dev is the
// device of the file system the file lives on (fstat's st_dev: the devpts
// instance of a pty, sockfs for a socket), so equal pts numbers in two
// devpts instances differ.
type FD struct {
	Kind string
	Dev  uint64
	Num  uint64
}

// Identify asks the kernel what f is: a pty master or a unix stream
// socket; anything else is an error.
func Identify(f *os.File) (FD, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return FD{}, fmt.Errorf("ticket: fstat: %w", err)
	}
	if pty.CheckMaster(f) == nil {
		n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPTN)
		if err != nil {
			return FD{}, fmt.Errorf("ticket: TIOCGPTN: %w", err)
		}
		return FD{Kind: KindPTY, Dev: st.Dev, Num: uint64(n)}, nil
	}
	if termsock.Is(f) {
		return FD{Kind: KindSocket, Dev: st.Dev, Num: st.Ino}, nil
	}
	return FD{}, fmt.Errorf("ticket: %w, nor a unix stream socket", pty.ErrNotMaster)
}

// Sign makes the ticket for info and fd, good until expires.
func Sign(key grant.Key, info msg.SessionInfo, fd FD, expires time.Time) (msg.SessionTicket, error) {
	if key == (grant.Key{}) {
		return msg.SessionTicket{}, ErrNoKey
	}
	t := msg.SessionTicket{Expires: expires.UnixMilli()}
	t.MAC = mac(key, info, fd, t.Expires)
	return t, nil
}

// Verify checks that t was made with key for info and fd and is not
// expired at now. The MAC is checked first and in constant time, so the
// expiry of a forged ticket is never believed.
func Verify(key grant.Key, info msg.SessionInfo, fd FD, t msg.SessionTicket, now time.Time) error {
	if key == (grant.Key{}) {
		return ErrNoKey
	}
	if len(t.MAC) == 0 {
		return ErrMissing
	}
	if len(t.MAC) != grant.MACSize || subtle.ConstantTimeCompare(mac(key, info, fd, t.Expires), t.MAC) != 1 {
		return ErrForged
	}
	if now.UnixMilli() >= t.Expires {
		return fmt.Errorf("%w: at %s", ErrExpired, time.UnixMilli(t.Expires).UTC())
	}
	return nil
}

// mac is keyed BLAKE3 over every field in a fixed order, variable-length
// ones behind a 4-byte big-endian length, so no two tickets encode alike.
// Sharing is left out: ptystore starts every session private.
func mac(key grant.Key, info msg.SessionInfo, fd FD, expires int64) []byte {
	var b []byte
	b = appendString(b, context)
	b = appendString(b, info.ID)
	b = appendString(b, info.Owner)
	b = appendString(b, info.UnixUser)
	b = appendString(b, info.Machine)
	b = binary.BigEndian.AppendUint64(b, uint64(info.Created))
	b = binary.BigEndian.AppendUint32(b, uint32(info.PID))
	b = appendString(b, fd.Kind)
	b = binary.BigEndian.AppendUint64(b, fd.Dev)
	b = binary.BigEndian.AppendUint64(b, fd.Num)
	b = binary.BigEndian.AppendUint64(b, uint64(expires))
	h := blake3.New(grant.MACSize, key[:])
	h.Write(b)
	return h.Sum(nil)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
