// Package store is auth's credential store: users, their passkeys,
// enrollment tokens and the replay record of used login challenges, in one
// bbolt file in auth's state directory.
//
// bbolt is a copy-on-write B+tree whose commit writes the new pages, syncs,
// then flips one of two checksummed meta pages and syncs again: a process
// killed at any instant leaves either the old or the new tree, never a mix,
// so an acknowledged credential survives kill -9 and nothing half-written
// is ever read back. Every change that must hold together (consume a token
// and store the credential; record a challenge as used and advance the
// signature counter) is one transaction.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"

	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
	"sluice/internal/grant"
	"sluice/internal/revoke"
)

// SchemaVersion is the layout this package reads and writes. A database
// with another version is refused rather than misread.
const SchemaVersion = 1

// FileName is the database file inside the state directory.
const FileName = "auth.db"

// Errors callers act on; test with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExpired  = errors.New("store: expired")
	ErrExists   = errors.New("store: already registered")
	ErrReplay   = errors.New("store: challenge already used")
	ErrCounter  = errors.New("store: signature counter did not increase (cloned authenticator?)")
	ErrSchema   = errors.New("store: unknown schema")
	ErrFull     = errors.New("store: state directory is full")
	// ErrBusy: another process held the database for longer than
	// Options.LockTimeout.
	ErrBusy = errors.New("store: database busy (locked by another process)")
)

var (
	bMeta      = []byte("meta")
	bUsers     = []byte("users")     // name -> User
	bHandles   = []byte("handles")   // user handle -> name
	bCreds     = []byte("creds")     // credential ID -> Credential
	bUserCreds = []byte("usercreds") // name NUL credential ID -> nothing
	bTokens    = []byte("tokens")    // SHA-256 of token -> Token
	bReplay    = []byte("replay")    // SHA-256 of challenge -> expiry (unix ms, 8 bytes BE)
	kSchema    = []byte("schema")
	// kRevocations holds the revocation list (JSON, package revoke): the
	// source of truth auth publishes for the grant checkers.
	kRevocations = []byte("revocations")
	allBuckets   = [][]byte{bUsers, bHandles, bCreds, bUserCreds, bTokens, bReplay}
)

// User is one sluice user: the name admins enroll and grants carry, and
// the random WebAuthn user handle their passkeys hold.
type User struct {
	Name    string `msgpack:"name"`
	Handle  []byte `msgpack:"handle"`
	Created int64  `msgpack:"created"` // unix ms
	// Disabled users cannot sign in, and their grants are revoked.
	Disabled bool `msgpack:"disabled,omitempty"`
}

// Credential is one registered passkey. Data is the WebAuthn credential
// record as the auth package serializes it; SignCount is kept beside it
// so the counter check runs inside the transaction that advances it.
type Credential struct {
	ID        []byte `msgpack:"id"`
	User      string `msgpack:"user"`
	Data      []byte `msgpack:"data"`
	SignCount uint32 `msgpack:"sign_count"`
	Created   int64  `msgpack:"created"`   // unix ms
	LastUsed  int64  `msgpack:"last_used"` // unix ms, 0: never
	Name      string `msgpack:"name,omitempty"`
}

// Token is a one-time enrollment token, stored under its hash.
type Token struct {
	User    string `msgpack:"user"`
	Created int64  `msgpack:"created"`
	Expires int64  `msgpack:"expires"`
}

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for another process holding the database
	// (bbolt's flock: exclusive for a read-write open, shared for a
	// read-only one). Default 3 s; past it Open fails with ErrBusy.
	LockTimeout time.Duration
	// Reserve is disk space kept allocated past the end of the database so
	// that sign-ins, which must write, still work when the file system
	// fills up. Default 1 MiB; negative disables.
	Reserve int64
	// RevocationRetain is how long a revoked passkey or a user's
	// not-before mark stays on the revocation list: as long as a grant
	// issued before it can live. Default grant.DefaultLifetime plus
	// grant.MaxSkew.
	RevocationRetain time.Duration
	// MinFree is the free space the file system must have left for a
	// registration or enrollment to be attempted. Default 1 MiB; negative
	// disables the check.
	MinFree int64
}

// Store is an open credential store.
type Store struct {
	db      *bolt.DB
	dir     string
	minFree int64
	retain  time.Duration
	// ReserveErr is why the space reserve could not be set up, if it
	// could not; the store works without it.
	ReserveErr error
}

func (o Options) withDefaults() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 3 * time.Second
	}
	if o.Reserve == 0 {
		o.Reserve = 1 << 20
	}
	if o.MinFree == 0 {
		o.MinFree = 1 << 20
	}
	if o.RevocationRetain <= 0 {
		o.RevocationRetain = grant.DefaultLifetime + grant.MaxSkew
	}
	return o
}

// Open opens (creating if needed) the store in dir for reading and
// writing. It holds an exclusive lock on the file until Close.
func Open(dir string, o Options) (*Store, error) {
	o = o.withDefaults()
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		return nil, openErr(path, err)
	}
	s := &Store{db: db, dir: dir, minFree: o.MinFree, retain: o.RevocationRetain}
	if err := s.initSchema(); err != nil {
		db.Close()
		return nil, err
	}
	if o.Reserve > 0 {
		s.ReserveErr = reserve(path, o.Reserve)
	}
	return s, nil
}

// OpenReadOnly opens the store in dir for reading only, under a shared
// lock that any number of readers hold at once; only a read-write open
// waits for them. A store that does not exist yet (or was never
// initialized) is created by a read-write Open instead, which holds the
// exclusive lock.
func OpenReadOnly(dir string, o Options) (*Store, error) {
	o = o.withDefaults()
	path := filepath.Join(dir, FileName)
	// bbolt initializes an empty file on open, which a read-only open
	// cannot write.
	if st, err := os.Stat(path); errors.Is(err, os.ErrNotExist) || err == nil && st.Size() == 0 {
		return Open(dir, o)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout, ReadOnly: true})
	if err != nil {
		return nil, openErr(path, err)
	}
	s := &Store{db: db, dir: dir, minFree: o.MinFree, retain: o.RevocationRetain}
	var found bool
	err = db.View(func(tx *bolt.Tx) error {
		if found = tx.Bucket(bMeta) != nil; found {
			return checkSchema(tx)
		}
		return nil
	})
	if err == nil && !found {
		// A creator died between bbolt's setup and the schema's.
		db.Close()
		return Open(dir, o)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func openErr(path string, err error) error {
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("store: open %s: %w", path, ErrBusy)
	}
	return fmt.Errorf("store: open %s: %w", path, classify(err))
}

// reserve allocates blocks for the file's current size plus extra without
// changing its size. bbolt grows the file with ftruncate, which then finds
// the blocks already there: writes into them cannot fail with ENOSPC.
func reserve(path string, extra int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("store: reserve: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: reserve: %w", err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, st.Size()+extra); err != nil {
		return fmt.Errorf("store: reserve %d bytes: %w", extra, err)
	}
	return nil
}

func (s *Store) initSchema() error {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bMeta) != nil
		if found {
			return checkSchema(tx)
		}
		return nil
	})
	if err != nil || found {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta != nil {
			return checkSchema(tx) // another process initialized it first
		}
		meta, err := tx.CreateBucket(bMeta)
		if err != nil {
			return err
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return meta.Put(kSchema, binary.BigEndian.AppendUint32(nil, SchemaVersion))
	})
	if err != nil {
		return fmt.Errorf("store: initialize: %w", classify(err))
	}
	return nil
}

func checkSchema(tx *bolt.Tx) error {
	v := tx.Bucket(bMeta).Get(kSchema)
	if len(v) != 4 {
		return fmt.Errorf("%w: schema key is %d bytes", ErrSchema, len(v))
	}
	if n := binary.BigEndian.Uint32(v); n != SchemaVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrSchema, n, SchemaVersion)
	}
	for _, b := range allBuckets {
		if tx.Bucket(b) == nil {
			return fmt.Errorf("%w: bucket %q missing", ErrSchema, b)
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// Check runs bbolt's consistency check (every page reachable once, keys in
// order) and the schema check.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("store: check: %w", err)
		}
		return checkSchema(tx)
	})
}

// classify turns "no space left" in any of its spellings into ErrFull.
// bbolt formats some file errors with %s, so the errno may only survive
// as text.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error()) || strings.Contains(err.Error(), syscall.EDQUOT.Error()) {
		return fmt.Errorf("%w: %v", ErrFull, err)
	}
	return err
}

// roomToGrow refuses a growing write when the file system is nearly full,
// leaving the remaining space (and the reserve) to sign-ins.
func (s *Store) roomToGrow() error {
	if s.minFree < 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return fmt.Errorf("store: statfs %s: %w", s.dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free < s.minFree {
		return fmt.Errorf("%w: %d bytes free in %s, need %d", ErrFull, free, s.dir, s.minFree)
	}
	return nil
}

func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	return classify(s.db.Update(fn))
}

func get[T any](b *bolt.Bucket, key []byte) (T, error) {
	var v T
	raw := b.Get(key)
	if raw == nil {
		return v, ErrNotFound
	}
	if err := msgpack.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("store: corrupt %T record: %w", v, err)
	}
	return v, nil
}

func put(b *bolt.Bucket, key []byte, v any) error {
	raw, err := msgpack.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// Enroll records a one-time token (by its hash) for user, creating the
// user with handle if they do not exist yet. It returns the user as stored
// (an existing user keeps their handle).
func (s *Store) Enroll(name string, handle, tokenHash []byte, expires, now time.Time) (User, error) {
	if err := s.roomToGrow(); err != nil {
		return User{}, err
	}
	var u User
	err := s.update(func(tx *bolt.Tx) error {
		prune(tx, now)
		users := tx.Bucket(bUsers)
		var err error
		u, err = get[User](users, []byte(name))
		if errors.Is(err, ErrNotFound) {
			if tx.Bucket(bHandles).Get(handle) != nil {
				return fmt.Errorf("store: user handle collision")
			}
			u = User{Name: name, Handle: handle, Created: now.UnixMilli()}
			if err := put(users, []byte(name), u); err != nil {
				return err
			}
			if err := tx.Bucket(bHandles).Put(handle, []byte(name)); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		tokens := tx.Bucket(bTokens)
		if tokens.Get(tokenHash) != nil {
			return fmt.Errorf("store: token hash collision")
		}
		return put(tokens, tokenHash, Token{User: name, Created: now.UnixMilli(), Expires: expires.UnixMilli()})
	})
	if err != nil {
		return User{}, fmt.Errorf("store: enroll %s: %w", name, err)
	}
	return u, nil
}

// Token returns the unused, unexpired token with this hash and its user.
func (s *Store) Token(tokenHash []byte, now time.Time) (Token, User, error) {
	var t Token
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if t, err = validToken(tx, tokenHash, now); err != nil {
			return err
		}
		u, err = get[User](tx.Bucket(bUsers), []byte(t.User))
		return err
	})
	if err != nil {
		return Token{}, User{}, fmt.Errorf("store: token: %w", err)
	}
	return t, u, nil
}

func validToken(tx *bolt.Tx, tokenHash []byte, now time.Time) (Token, error) {
	t, err := get[Token](tx.Bucket(bTokens), tokenHash)
	if err != nil {
		return t, err
	}
	if now.UnixMilli() >= t.Expires {
		return t, ErrExpired
	}
	return t, nil
}

// User returns the user with this name.
func (s *Store) User(name string) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		u, err = get[User](tx.Bucket(bUsers), []byte(name))
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("store: user %q: %w", name, err)
	}
	return u, nil
}

// UserByHandle returns the user whose WebAuthn user handle this is.
func (s *Store) UserByHandle(handle []byte) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		name := tx.Bucket(bHandles).Get(handle)
		if name == nil {
			return ErrNotFound
		}
		var err error
		u, err = get[User](tx.Bucket(bUsers), name)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("store: user handle: %w", err)
	}
	return u, nil
}

// Credentials returns a user's passkeys.
func (s *Store) Credentials(name string) ([]Credential, error) {
	var cs []Credential
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(name), 0)
		creds := tx.Bucket(bCreds)
		c := tx.Bucket(bUserCreds).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			cr, err := get[Credential](creds, k[len(prefix):])
			if err != nil {
				return fmt.Errorf("index names credential %x: %w", k[len(prefix):], err)
			}
			cs = append(cs, cr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: credentials of %q: %w", name, err)
	}
	return cs, nil
}

// Credential returns the passkey with this ID.
func (s *Store) Credential(id []byte) (Credential, error) {
	var cr Credential
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		cr, err = get[Credential](tx.Bucket(bCreds), id)
		return err
	})
	if err != nil {
		return Credential{}, fmt.Errorf("store: credential %x: %w", id, err)
	}
	return cr, nil
}

// Register consumes the token and stores the credential for the token's
// user, in one transaction: a token registers at most one passkey, and a
// passkey is never stored without its token having been spent.
func (s *Store) Register(tokenHash []byte, cr Credential, now time.Time) error {
	if err := s.roomToGrow(); err != nil {
		return err
	}
	err := s.update(func(tx *bolt.Tx) error {
		prune(tx, now)
		t, err := validToken(tx, tokenHash, now)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if t.User != cr.User {
			return fmt.Errorf("token is for %q, credential for %q", t.User, cr.User)
		}
		if err := tx.Bucket(bTokens).Delete(tokenHash); err != nil {
			return err
		}
		creds := tx.Bucket(bCreds)
		if creds.Get(cr.ID) != nil {
			return ErrExists
		}
		cr.Created = now.UnixMilli()
		if err := put(creds, cr.ID, cr); err != nil {
			return err
		}
		return tx.Bucket(bUserCreds).Put(append(append([]byte(cr.User), 0), cr.ID...), nil)
	})
	if err != nil {
		return fmt.Errorf("store: register credential for %q: %w", cr.User, err)
	}
	return nil
}

// Use records a successful sign-in with credential id: the challenge
// (by hash) becomes used until replayUntil, and the credential's counter
// and data are updated. It fails with ErrReplay if the challenge was used
// before and with ErrCounter if the counter does not move forward from
// what is stored now (a counter of zero on both sides means the
// authenticator does not count, and is allowed).
func (s *Store) Use(id, challengeHash []byte, replayUntil time.Time, signCount uint32, data []byte, now time.Time) error {
	err := s.update(func(tx *bolt.Tx) error {
		prune(tx, now)
		replay := tx.Bucket(bReplay)
		if replay.Get(challengeHash) != nil {
			return ErrReplay
		}
		if err := replay.Put(challengeHash, binary.BigEndian.AppendUint64(nil, uint64(replayUntil.UnixMilli()))); err != nil {
			return err
		}
		creds := tx.Bucket(bCreds)
		cr, err := get[Credential](creds, id)
		if err != nil {
			return err
		}
		if (signCount != 0 || cr.SignCount != 0) && signCount <= cr.SignCount {
			return fmt.Errorf("%w: stored %d, presented %d", ErrCounter, cr.SignCount, signCount)
		}
		cr.SignCount, cr.Data, cr.LastUsed = signCount, data, now.UnixMilli()
		return put(creds, id, cr)
	})
	if err != nil {
		return fmt.Errorf("store: use credential %x: %w", id, err)
	}
	return nil
}

// ChallengeUsed reports whether a login challenge (by hash) was already
// used. It is an early, friendlier answer only: Use checks again inside
// its transaction, which is what makes a challenge single-use.
func (s *Store) ChallengeUsed(challengeHash []byte, now time.Time) (bool, error) {
	var used bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bReplay).Get(challengeHash)
		used = v != nil && len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now.UnixMilli()
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: replay record: %w", err)
	}
	return used, nil
}

// prune drops expired tokens and replay records. Both sets are small and
// short-lived, so a scan inside the writing transaction is cheap.
func prune(tx *bolt.Tx, now time.Time) {
	n := now.UnixMilli()
	var dead [][]byte
	c := tx.Bucket(bReplay).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= n {
			dead = append(dead, k)
		}
	}
	for _, k := range dead {
		tx.Bucket(bReplay).Delete(k)
	}
	dead = dead[:0]
	c = tx.Bucket(bTokens).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var t Token
		if msgpack.Unmarshal(v, &t) != nil || t.Expires <= n {
			dead = append(dead, k)
		}
	}
	for _, k := range dead {
		tx.Bucket(bTokens).Delete(k)
	}
}

// --- lifecycle ---------------------------------------------------------------

// UserSummary is a user as `sluicectl users list` shows them.
type UserSummary struct {
	User
	Passkeys int
	LastUsed int64 // unix ms of the latest sign-in with any passkey, 0: never
}

// Users lists every user, in name order.
func (s *Store) Users() ([]UserSummary, error) {
	var us []UserSummary
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := msgpack.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("corrupt user %q: %w", k, err)
			}
			sum := UserSummary{User: u}
			err := eachCredential(tx, u.Name, func(cr Credential) {
				sum.Passkeys++
				sum.LastUsed = max(sum.LastUsed, cr.LastUsed)
			})
			us = append(us, sum)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: users: %w", err)
	}
	return us, nil
}

func eachCredential(tx *bolt.Tx, name string, fn func(Credential)) error {
	prefix := append([]byte(name), 0)
	creds := tx.Bucket(bCreds)
	c := tx.Bucket(bUserCreds).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		cr, err := get[Credential](creds, k[len(prefix):])
		if err != nil {
			return fmt.Errorf("index names credential %x: %w", k[len(prefix):], err)
		}
		fn(cr)
	}
	return nil
}

// Revocations returns the revocation list as stored.
func (s *Store) Revocations() (revoke.List, error) {
	var l revoke.List
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		l, err = revocations(tx)
		return err
	})
	if err != nil {
		return revoke.List{}, fmt.Errorf("store: revocations: %w", err)
	}
	return l, nil
}

func revocations(tx *bolt.Tx) (revoke.List, error) {
	l := revoke.List{Version: revoke.Version}
	if raw := tx.Bucket(bMeta).Get(kRevocations); raw != nil {
		if err := json.Unmarshal(raw, &l); err != nil {
			return l, fmt.Errorf("corrupt revocation list: %w", err)
		}
	}
	if l.Users == nil {
		l.Users = map[string]revoke.User{}
	}
	if l.Credentials == nil {
		l.Credentials = map[string]int64{}
	}
	l.Version = revoke.Version
	return l, nil
}

// changeRevocations applies fn to the stored list inside tx, prunes what
// has outlived every grant, and stores it back.
func (s *Store) changeRevocations(tx *bolt.Tx, now time.Time, fn func(*revoke.List)) (revoke.List, error) {
	l, err := revocations(tx)
	if err != nil {
		return l, err
	}
	fn(&l)
	l.Prune(now.Add(-s.retain).UnixMilli())
	l.Written = now.UnixMilli()
	raw, err := json.Marshal(l)
	if err != nil {
		return l, err
	}
	return l, tx.Bucket(bMeta).Put(kRevocations, raw)
}

// SetDisabled disables or enables a user. Disabling also voids every grant
// issued until now; enabling lifts the block on new sign-ins only. changed
// is false when the user already was so. The list returned is the new
// revocation list, for auth to publish.
func (s *Store) SetDisabled(name string, disabled bool, now time.Time) (changed bool, l revoke.List, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bUsers)
		u, err := get[User](users, []byte(name))
		if err != nil {
			return err
		}
		changed = u.Disabled != disabled
		u.Disabled = disabled
		if err := put(users, []byte(name), u); err != nil {
			return err
		}
		l, err = s.changeRevocations(tx, now, func(l *revoke.List) {
			e := l.Users[name]
			e.Disabled = disabled
			if disabled && changed {
				e.NotBefore = now.UnixMilli()
			}
			l.Users[name] = e
		})
		return err
	})
	if err != nil {
		return false, revoke.List{}, fmt.Errorf("store: set %s disabled=%v: %w", name, disabled, err)
	}
	return changed, l, nil
}

// RemoveUser deletes a user, their passkeys and their enrollment tokens,
// and voids every grant issued to the name until now (a user enrolled
// under the same name later starts afresh).
func (s *Store) RemoveUser(name string, now time.Time) (revoke.List, error) {
	var l revoke.List
	err := s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bUsers)
		u, err := get[User](users, []byte(name))
		if err != nil {
			return err
		}
		var ids [][]byte
		if err := eachCredential(tx, name, func(cr Credential) { ids = append(ids, cr.ID) }); err != nil {
			return err
		}
		for _, id := range ids {
			if err := deleteCredential(tx, name, id); err != nil {
				return err
			}
		}
		var dead [][]byte
		tokens := tx.Bucket(bTokens)
		tokens.ForEach(func(k, v []byte) error {
			var t Token
			if msgpack.Unmarshal(v, &t) == nil && t.User == name {
				dead = append(dead, k)
			}
			return nil
		})
		for _, k := range dead {
			if err := tokens.Delete(k); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bHandles).Delete(u.Handle); err != nil {
			return err
		}
		if err := users.Delete([]byte(name)); err != nil {
			return err
		}
		l, err = s.changeRevocations(tx, now, func(l *revoke.List) {
			l.Users[name] = revoke.User{NotBefore: now.UnixMilli()}
		})
		return err
	})
	if err != nil {
		return revoke.List{}, fmt.Errorf("store: remove user %s: %w", name, err)
	}
	return l, nil
}

func deleteCredential(tx *bolt.Tx, name string, id []byte) error {
	if err := tx.Bucket(bCreds).Delete(id); err != nil {
		return err
	}
	return tx.Bucket(bUserCreds).Delete(append(append([]byte(name), 0), id...))
}

// RevokeCredential deletes user name's passkey id and voids the grants it
// yielded. remaining is how many passkeys the user has left. A passkey of
// another user is ErrNotFound, as one that does not exist.
func (s *Store) RevokeCredential(name string, id []byte, now time.Time) (remaining int, l revoke.List, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		cr, err := get[Credential](tx.Bucket(bCreds), id)
		if err != nil {
			return err
		}
		if cr.User != name {
			return ErrNotFound
		}
		if err := deleteCredential(tx, name, id); err != nil {
			return err
		}
		if err := eachCredential(tx, name, func(Credential) { remaining++ }); err != nil {
			return err
		}
		l, err = s.changeRevocations(tx, now, func(l *revoke.List) {
			l.Credentials[hex.EncodeToString(id)] = now.UnixMilli()
		})
		return err
	})
	if err != nil {
		return 0, revoke.List{}, fmt.Errorf("store: revoke passkey %x of %s: %w", id, name, err)
	}
	return remaining, l, nil
}
