package record

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"sluice/msg"
)

// Ext is a recording's file name extension: ID.cast.
const Ext = ".cast"

// ErrNotFound: no recording has that id.
var ErrNotFound = errors.New("no such recording")

// Store is the directory of recordings: one ID.cast per session, 0600,
// owned by the recording helper's user (the directory is 0700), so only
// that user and root can read or write them. A recorder holds an
// exclusive flock on its file while it writes: that is what "live" means,
// and it goes away by itself when the recorder dies.
type Store struct {
	Dir string
	// MaxTotal bounds the bytes of all recordings: when a new one starts,
	// the oldest ended ones are removed until the rest fit. 0: no bound.
	MaxTotal int64
	// MaxAge: ended recordings older than this are removed when a new one
	// starts. 0: kept for ever.
	MaxAge time.Duration
	Log    *slog.Logger
}

// ValidID says whether id can name a recording: a session id, 32 hex.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (s *Store) path(id string) string { return filepath.Join(s.Dir, id+Ext) }

// Create makes a new recording file and locks it as live.
func (s *Store) Create(id string) (*os.File, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("record: invalid recording id %q", id)
	}
	f, err := os.OpenFile(s.path(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("record: create %s: %w", id, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("record: lock %s: %w", id, err)
	}
	return f, nil
}

// Open opens a recording read-only, with what it is.
func (s *Store) Open(id string) (*os.File, msg.Recording, error) {
	if !ValidID(id) {
		return nil, msg.Recording{}, fmt.Errorf("record: open %q: %w", id, ErrNotFound)
	}
	f, err := os.OpenFile(s.path(id), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, msg.Recording{}, fmt.Errorf("record: open %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, msg.Recording{}, fmt.Errorf("record: open %s: %w", id, err)
	}
	info, err := describe(f, id)
	if err != nil {
		f.Close()
		return nil, msg.Recording{}, err
	}
	return f, info, nil
}

// describe reads a recording's header and whether it is live.
func describe(f *os.File, id string) (msg.Recording, error) {
	r := msg.Recording{ID: id}
	st, err := f.Stat()
	if err != nil {
		return r, fmt.Errorf("record: %s: %w", id, err)
	}
	r.Size, r.Modified = st.Size(), st.ModTime().UnixMilli()
	r.Live = isLive(f)
	line, err := bufio.NewReaderSize(f, 4096).ReadSlice('\n')
	if _, serr := f.Seek(0, 0); serr != nil {
		return r, fmt.Errorf("record: %s: %w", id, serr)
	}
	var h Header
	if err != nil || json.Unmarshal(line, &h) != nil {
		// A header not yet (or never) written: still listed, so an admin
		// sees it, and verify says what is wrong.
		r.Started = r.Modified
		return r, nil
	}
	r.Requester, r.UnixUser, r.Machine = h.Sluice.Requester, h.Sluice.UnixUser, h.Sluice.Machine
	r.Started, r.Input = h.Sluice.Started, h.Sluice.Input
	r.Width, r.Height = uint16(h.Width), uint16(h.Height)
	return r, nil
}

// isLive: a recorder holds the file's lock. f is a description of its
// own (opened by Open), so a shared lock taken here is ours and let go.
func isLive(f *os.File) bool {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// List returns the recordings that match q and whose machine is in
// scope (nil: every machine), newest first.
func (s *Store) List(q msg.RecList, scope func(machine string) bool) ([]msg.Recording, bool, error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, false, fmt.Errorf("record: list: %w", err)
	}
	var out []msg.Recording
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), Ext)
		if !ok || !ValidID(id) || !e.Type().IsRegular() {
			continue
		}
		f, r, err := s.Open(id)
		if err != nil {
			continue // removed meanwhile
		}
		f.Close()
		if q.User != "" && q.User != r.Requester && q.User != r.UnixUser ||
			q.Machine != "" && q.Machine != r.Machine ||
			q.Since != 0 && r.Started < q.Since || q.Until != 0 && r.Started > q.Until ||
			q.Live && !r.Live || scope != nil && !scope(r.Machine) {
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b msg.Recording) int {
		if a.Started != b.Started {
			return int(b.Started - a.Started)
		}
		return strings.Compare(a.ID, b.ID)
	})
	if len(out) > msg.MaxRecList {
		return out[:msg.MaxRecList], true, nil
	}
	return out, false, nil
}

// Prune removes ended recordings past MaxAge, then the oldest ended ones
// while all of them together exceed MaxTotal. Live ones are never removed.
func (s *Store) Prune(now time.Time) error {
	if s.MaxAge <= 0 && s.MaxTotal <= 0 {
		return nil
	}
	all, _, err := s.List(msg.RecList{}, nil)
	if err != nil {
		return err
	}
	var total int64
	for _, r := range all {
		total += r.Size
	}
	// Oldest first.
	for i := len(all) - 1; i >= 0; i-- {
		r := all[i]
		if r.Live {
			continue
		}
		old := s.MaxAge > 0 && now.Sub(time.UnixMilli(r.Modified)) > s.MaxAge
		over := s.MaxTotal > 0 && total > s.MaxTotal
		if !old && !over {
			continue
		}
		if err := os.Remove(s.path(r.ID)); err != nil {
			return fmt.Errorf("record: prune %s: %w", r.ID, err)
		}
		total -= r.Size
		if s.Log != nil {
			s.Log.Info("record: pruned", "id", r.ID, "size", r.Size, "age", now.Sub(time.UnixMilli(r.Modified)).Round(time.Second).String(), "old", old, "over_total", over)
		}
	}
	return nil
}
