package ptystore

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/names"
	"sluice/msg"
	"sluice/rpc"
)

// The session metadata rides in the fd's own name in the fd store, rather
// than in a file under a state directory: the fd and what it is then live
// and die together in one place, so a crash can never leave a stored fd
// without its metadata or metadata without its fd, and the helper needs no
// writable directory at all (its unit is ProtectSystem=strict with none).
// The price is systemd's limit on a name: 255 bytes, no control characters
// and no ':' (the LISTEN_FDNAMES separator). base64url keeps within the
// charset, and a compact msgpack array keeps typical sessions far below the
// limit; a put whose metadata would not fit is refused.

// FDNamePrefix starts the name of every fd ptystore stores.
const FDNamePrefix = "pty."

// MaxFDName is systemd's FDNAME_MAX.
const MaxFDName = 255

// Limits on the fields, so one oversized field cannot crowd out the others.
const (
	MaxIDLen      = 64
	MaxFieldLen   = 64
	nameFormatVer = 1
)

var errNameTooLong = errors.New("session metadata does not fit in an fd store name")

// record is what an fd's name carries: the session and its share epoch.
type record struct {
	_msgpack struct{} `msgpack:",as_array"`
	Version  uint8
	ID       string
	Owner    string
	UnixUser string
	Machine  string
	Created  int64
	Sharing  uint8
	Epoch    uint32
	PID      int32
}

var sharingCodes = []string{msg.SharePrivate, msg.ShareReadOnly, msg.ShareReadWrite}

func sharingCode(mode string) (uint8, bool) {
	for i, m := range sharingCodes {
		if m == mode {
			return uint8(i), true
		}
	}
	return 0, false
}

// fdName encodes a session and its share epoch as an fd store name.
func fdName(info msg.SessionInfo, epoch uint32) (string, error) {
	sc, ok := sharingCode(info.Sharing)
	if !ok {
		return "", fmt.Errorf("unknown sharing mode %q", info.Sharing)
	}
	b, err := msgpack.Marshal(&record{
		Version: nameFormatVer, ID: info.ID, Owner: info.Owner, UnixUser: info.UnixUser,
		Machine: info.Machine, Created: info.Created, Sharing: sc, Epoch: epoch, PID: info.PID,
	})
	if err != nil {
		return "", err
	}
	name := FDNamePrefix + base64.RawURLEncoding.EncodeToString(b)
	if len(name) > MaxFDName {
		return "", fmt.Errorf("%w: %d bytes, limit %d", errNameTooLong, len(name), MaxFDName)
	}
	return name, nil
}

// parseFDName decodes a name fdName made.
func parseFDName(name string) (msg.SessionInfo, uint32, error) {
	enc, ok := strings.CutPrefix(name, FDNamePrefix)
	if !ok {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q lacks prefix %q", name, FDNamePrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q: %w", name, err)
	}
	// The msgpack decoder allocates what a length claims: fifteen
	// characters of name claimed 1.3 GB and took the fuzzer down.
	if err := rpc.CheckMsgpack(b); err != nil {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q: %w", name, err)
	}
	var r record
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q: %w", name, err)
	}
	if r.Version != nameFormatVer {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q: format %d, want %d", name, r.Version, nameFormatVer)
	}
	if int(r.Sharing) >= len(sharingCodes) {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q: sharing code %d", name, r.Sharing)
	}
	info := msg.SessionInfo{
		ID: r.ID, Owner: r.Owner, UnixUser: r.UnixUser, Machine: r.Machine,
		Created: r.Created, Sharing: sharingCodes[r.Sharing], PID: r.PID,
	}
	if err := validInfo(info); err != nil {
		return msg.SessionInfo{}, 0, fmt.Errorf("fd name %q: %w", name, err)
	}
	return info, r.Epoch, nil
}

// validInfo checks the fields a caller supplies on put.
func validInfo(info msg.SessionInfo) error {
	if info.ID == "" || len(info.ID) > MaxIDLen {
		return fmt.Errorf("session id of %d bytes, want 1..%d", len(info.ID), MaxIDLen)
	}
	if !printable(info.ID) {
		return errors.New("session id has non-printable bytes")
	}
	for _, f := range []struct{ name, v string }{
		{"owner", info.Owner}, {"unix user", info.UnixUser}, {"machine", info.Machine},
	} {
		if f.v == "" || len(f.v) > MaxFieldLen {
			return fmt.Errorf("%s of %d bytes, want 1..%d", f.name, len(f.v), MaxFieldLen)
		}
	}
	// As policy checks them: these reach admins' terminals (sluicectl
	// sessions) and logs, and a compromised frontend writes them. The
	// owner needs no check here: it must equal the grant's user, which
	// auth vouches for.
	if !names.UnixUser(info.UnixUser) {
		return fmt.Errorf("invalid unix user name %q", info.UnixUser)
	}
	if !names.Machine(info.Machine) {
		return fmt.Errorf("invalid machine name %q", info.Machine)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
