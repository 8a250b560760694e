package store

import (
	"log/slog"
	"sync"
	"time"

	"sluice/internal/revoke"
)

// Lazy is the store as sluice-auth uses it: nothing is open until an
// operation needs the database, and each operation opens it, runs its one
// transaction and closes it again. bbolt holds its flock for as long as a
// database is open, so processes sharing the file (Accept=yes: one
// process per call) wait for each other for one transaction at most, and
// a call that needs no database (a usernameless login-begin) never waits.
// Operations that only read open read-only, under the shared lock.
//
// Every method of Lazy is the Store method of the same name.
type Lazy struct {
	dir string
	o   Options
	log *slog.Logger
	// mu orders the opens of this process: flock also conflicts between
	// two opens in one process, and bbolt waits for it by polling where
	// a mutex queues.
	mu sync.RWMutex
}

// NewLazy returns the store in dir, opened per operation with o. log, if
// not nil, hears of a missing space reserve and of close errors.
func NewLazy(dir string, o Options, log *slog.Logger) *Lazy {
	return &Lazy{dir: dir, o: o, log: log}
}

// Read runs fn on the store opened read-only.
func (l *Lazy) Read(fn func(*Store) error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s, err := OpenReadOnly(l.dir, l.o)
	if err != nil {
		return err
	}
	defer l.close(s)
	return fn(s)
}

// Write runs fn on the store opened for reading and writing.
func (l *Lazy) Write(fn func(*Store) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, err := Open(l.dir, l.o)
	if err != nil {
		return err
	}
	defer l.close(s)
	if s.ReserveErr != nil && l.log != nil {
		l.log.Warn("auth: no space reserve for sign-ins", "err", s.ReserveErr)
	}
	return fn(s)
}

// close only logs: a write was durable when its commit returned, and
// reporting it failed would have the caller retry what was done.
func (l *Lazy) close(s *Store) {
	if err := s.Close(); err != nil && l.log != nil {
		l.log.Warn("auth: closing the credential store", "err", err)
	}
}

func read[T any](l *Lazy, fn func(*Store) (T, error)) (T, error) {
	var v T
	err := l.Read(func(s *Store) error {
		var err error
		v, err = fn(s)
		return err
	})
	return v, err
}

func (l *Lazy) Enroll(name string, handle, tokenHash []byte, expires, now time.Time) (User, error) {
	var u User
	err := l.Write(func(s *Store) error {
		var err error
		u, err = s.Enroll(name, handle, tokenHash, expires, now)
		return err
	})
	return u, err
}

func (l *Lazy) Register(tokenHash []byte, cr Credential, now time.Time) error {
	return l.Write(func(s *Store) error { return s.Register(tokenHash, cr, now) })
}

func (l *Lazy) Use(id, challengeHash []byte, replayUntil time.Time, signCount uint32, data []byte, now time.Time) error {
	return l.Write(func(s *Store) error { return s.Use(id, challengeHash, replayUntil, signCount, data, now) })
}

func (l *Lazy) Token(tokenHash []byte, now time.Time) (Token, User, error) {
	var t Token
	var u User
	err := l.Read(func(s *Store) error {
		var err error
		t, u, err = s.Token(tokenHash, now)
		return err
	})
	return t, u, err
}

func (l *Lazy) User(name string) (User, error) {
	return read(l, func(s *Store) (User, error) { return s.User(name) })
}

func (l *Lazy) UserByHandle(handle []byte) (User, error) {
	return read(l, func(s *Store) (User, error) { return s.UserByHandle(handle) })
}

func (l *Lazy) Credentials(name string) ([]Credential, error) {
	return read(l, func(s *Store) ([]Credential, error) { return s.Credentials(name) })
}

func (l *Lazy) Credential(id []byte) (Credential, error) {
	return read(l, func(s *Store) (Credential, error) { return s.Credential(id) })
}

func (l *Lazy) ChallengeUsed(challengeHash []byte, now time.Time) (bool, error) {
	return read(l, func(s *Store) (bool, error) { return s.ChallengeUsed(challengeHash, now) })
}

func (l *Lazy) Users() ([]UserSummary, error) {
	return read(l, func(s *Store) ([]UserSummary, error) { return s.Users() })
}

func (l *Lazy) Revocations() (revoke.List, error) {
	return read(l, func(s *Store) (revoke.List, error) { return s.Revocations() })
}

func (l *Lazy) SetDisabled(name string, disabled bool, now time.Time) (changed bool, rl revoke.List, err error) {
	err = l.Write(func(s *Store) error {
		changed, rl, err = s.SetDisabled(name, disabled, now)
		return err
	})
	return changed, rl, err
}

func (l *Lazy) RemoveUser(name string, now time.Time) (rl revoke.List, err error) {
	err = l.Write(func(s *Store) error {
		rl, err = s.RemoveUser(name, now)
		return err
	})
	return rl, err
}

func (l *Lazy) RevokeCredential(name string, id []byte, now time.Time) (remaining int, rl revoke.List, err error) {
	err = l.Write(func(s *Store) error {
		remaining, rl, err = s.RevokeCredential(name, id, now)
		return err
	})
	return remaining, rl, err
}

func (l *Lazy) Check() error {
	return l.Read(func(s *Store) error { return s.Check() })
}
