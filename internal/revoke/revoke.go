// Package revoke is the revocation list: which users are disabled, before
// which instant a user's grants are void, and which passkeys are revoked.
// Auth keeps the list in its database and publishes it as one small file,
// atomically replaced, in a directory the grant checkers (policy, ptystore)
// and the frontend can read. A Checker stats that file on every call and
// rereads it when it changed; a missing or unreadable file refuses every
// grant (fail closed). See docs/threat-model.md, "Revocation".
package revoke

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"sluice/msg"
)

// FileName is the published list inside its directory.
const FileName = "revocations.json"

// DefaultDir is where auth publishes under systemd (sluice.tmpfiles makes
// it, group sluice-revocation, which only auth is in).
const DefaultDir = "/var/lib/sluice-revocation"

// Version is the file format; another version is refused (fail closed).
const Version = 1

// MaxSize bounds the file a checker reads: at a few dozen bytes an entry
// that is tens of thousands of users and passkeys.
const MaxSize = 4 << 20

// Errors a check returns; test with errors.Is.
var (
	// ErrRevoked: the grant was revoked (user disabled or removed, or its
	// passkey revoked).
	ErrRevoked = errors.New("revoke: grant revoked")
	// ErrUnavailable: the list could not be read, so no grant is good.
	ErrUnavailable = errors.New("revoke: revocation list unavailable")
)

// User is one user's entry.
type User struct {
	// Disabled voids every grant of the user.
	Disabled bool `json:"disabled,omitempty"`
	// NotBefore voids the grants issued at or before it (unix ms): set
	// when the user was disabled or removed, kept when they are enabled
	// again or enrolled anew, so older grants stay dead.
	NotBefore int64 `json:"not_before,omitempty"`
}

// List is the revocation list as published.
type List struct {
	Version int   `json:"version"`
	Written int64 `json:"written"` // unix ms
	// Users by sluice user name.
	Users map[string]User `json:"users,omitempty"`
	// Credentials are revoked passkeys: hex credential ID -> when (unix ms).
	Credentials map[string]int64 `json:"credentials,omitempty"`

	creds map[string]struct{} // raw IDs, built by index
}

// Check says whether g is revoked by l. It looks at the grant's user, issue
// time and credential only: the MAC is grant.Verify's business.
func (l *List) Check(g msg.Grant) error {
	if u, ok := l.Users[g.User]; ok {
		if u.Disabled {
			return fmt.Errorf("%w: user %s is disabled", ErrRevoked, g.User)
		}
		if g.Issued <= u.NotBefore {
			return fmt.Errorf("%w: %s's grants from before %d were revoked", ErrRevoked, g.User, u.NotBefore)
		}
	}
	if len(g.Credential) > 0 {
		var revoked bool
		if l.creds != nil {
			_, revoked = l.creds[string(g.Credential)]
		} else {
			// A list built in memory (auth's), not indexed; Check must
			// not write to a list that readers may share.
			_, revoked = l.Credentials[hex.EncodeToString(g.Credential)]
		}
		if revoked {
			return fmt.Errorf("%w: the passkey of this sign-in was revoked", ErrRevoked)
		}
	}
	return nil
}

// index builds the raw-ID set Check looks up without allocating.
func (l *List) index() {
	l.creds = make(map[string]struct{}, len(l.Credentials))
	for h := range l.Credentials {
		if b, err := hex.DecodeString(h); err == nil {
			l.creds[string(b)] = struct{}{}
		}
	}
}

// Prune drops what can no longer matter: revoked passkeys and not-before
// marks of enabled users older than before (unix ms), whose grants have
// all expired by then.
func (l *List) Prune(before int64) {
	for h, at := range l.Credentials {
		if at < before {
			delete(l.Credentials, h)
		}
	}
	for n, u := range l.Users {
		if !u.Disabled && u.NotBefore < before {
			delete(l.Users, n)
		}
	}
	l.creds = nil
}

// Parse decodes a published list.
func Parse(b []byte) (*List, error) {
	var l List
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("revoke: list undecodable: %w", err)
	}
	if l.Version != Version {
		return nil, fmt.Errorf("revoke: list version %d, this build reads %d", l.Version, Version)
	}
	for h := range l.Credentials {
		if _, err := hex.DecodeString(h); err != nil || h == "" {
			return nil, fmt.Errorf("revoke: credential %q is not hex", h)
		}
	}
	l.index()
	return &l, nil
}

// Write publishes l as dir/FileName: written to a temporary file in dir,
// synced, made world-readable (it holds user names and passkey IDs, which
// the readers know anyway), and renamed over the old one, so a reader sees
// the old list or the new one, never a part.
func Write(dir string, l List) error {
	l.Version = Version
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("revoke: encode: %w", err)
	}
	if len(b) > MaxSize {
		return fmt.Errorf("revoke: list of %d bytes above the limit %d", len(b), MaxSize)
	}
	f, err := os.CreateTemp(dir, ".revocations-*")
	if err != nil {
		return fmt.Errorf("revoke: publish: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, FileName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("revoke: publish: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Checker checks grants against the published list in a directory,
// rereading it whenever the file changed. Safe for concurrent use.
type Checker struct {
	path string

	mu   sync.Mutex
	seen stamp
	list *List
	err  error
}

// stamp is what tells one version of the file from another: a rename puts
// a new inode in place, and a rewrite in place changes size or times.
type stamp struct {
	dev, ino, size   uint64
	mtime, ctime     int64
	mtimeNs, ctimeNs int64
}

// NewChecker checks against dir/FileName.
func NewChecker(dir string) *Checker {
	return &Checker{path: filepath.Join(dir, FileName)}
}

// Path is the file checked.
func (c *Checker) Path() string { return c.path }

// Check returns nil if the list could be read and does not revoke g,
// an ErrRevoked error if it does, and an ErrUnavailable error if there is
// no readable list.
func (c *Checker) Check(g msg.Grant) error {
	l, err := c.Current()
	if err != nil {
		return err
	}
	return l.Check(g)
}

// Current returns the list as it is now on disk, reread if it changed.
// The returned list must not be modified.
func (c *Checker) Current() (*List, error) {
	l, _, err := c.current()
	return l, err
}

// Changed is Current, also reporting whether the file changed since the
// previous call (or appeared or went away).
func (c *Checker) Changed() (*List, bool, error) {
	return c.current()
}

func (c *Checker) current() (*List, bool, error) {
	var st syscall.Stat_t
	err := syscall.Stat(c.path, &st)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		changed := c.err == nil || c.list != nil
		c.list, c.seen, c.err = nil, stamp{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, c.path, err)
		return nil, changed, c.err
	}
	s := stamp{uint64(st.Dev), st.Ino, uint64(st.Size), st.Mtim.Sec, st.Ctim.Sec, st.Mtim.Nsec, st.Ctim.Nsec}
	if s == c.seen && (c.list != nil || c.err != nil) {
		return c.list, false, c.err
	}
	c.seen = s
	c.list, c.err = load(c.path)
	return c.list, true, c.err
}

func load(path string) (*List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrUnavailable, path, MaxSize)
	}
	l, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, path, err)
	}
	return l, nil
}
