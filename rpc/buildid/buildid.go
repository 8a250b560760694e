// Package buildid computes and looks up build IDs: the BLAKE3 derive_key of
// an executable's bytes under the context string of an intent. A build ID
// names the exact binary speaking a protocol, so version skew between two
// helpers is caught at the handshake; keying it by the intent means one
// side cannot answer by echoing the other's line.
package buildid

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"lukechampine.com/blake3"
)

// OfBytes returns the build ID of an executable image for an intent.
func OfBytes(intent string, exe []byte) string {
	var out [32]byte
	blake3.DeriveKey(out[:], intent, exe)
	return hex.EncodeToString(out[:])
}

// OfFile maps the file at path and returns its build IDs for each intent.
func OfFile(path string, intents ...string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("buildid: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("buildid: %w", err)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("buildid: %s is empty", path)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("buildid: mmap %s: %w", path, err)
	}
	defer unix.Munmap(data)
	ids := make([]string, len(intents))
	for i, in := range intents {
		ids[i] = OfBytes(in, data)
	}
	return ids, nil
}

// Identity is what stat says about a binary file. A manifest records it
// next to the IDs it computed, so a process can trust a precomputed ID for
// itself only when the file it is running from is that very file, unchanged
// (ctime cannot be set back by anyone who writes the file).
type Identity struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

// Stat returns the identity of the file at path (following links, so
// /proc/self/exe gives the running image, even if it was since replaced).
func Stat(path string) (Identity, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Identity{}, fmt.Errorf("buildid: stat %s: %w", path, err)
	}
	return Identity{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(),
	}, nil
}

// Binary is one component's executable in a manifest.
type Binary struct {
	Component string   `json:"component"`
	File      string   `json:"file"`
	Identity  Identity `json:"identity"`
}

// Entry is one side of one protocol: the intent a component speaks and the
// build ID it presents with it.
type Entry struct {
	Component string `json:"component"`
	Protocol  string `json:"protocol"`
	Role      string `json:"role"` // "client" or "server"
	Intent    string `json:"intent"`
	BuildID   string `json:"build_id"`
}

// Manifest is build-ids.json: what every component presents on every
// protocol it speaks, for peers, admins and outside clients to check.
type Manifest struct {
	Version  int      `json:"version"`
	Binaries []Binary `json:"binaries"`
	Entries  []Entry  `json:"entries"`
}

// Load reads a manifest file.
func Load(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("buildid: manifest: %w", err)
	}
	m, ok := decodeManifest(b)
	if !ok {
		m = Manifest{}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("buildid: manifest %s: %w", path, err)
		}
	}
	if m.Version != 1 {
		return nil, fmt.Errorf("buildid: manifest %s: version %d, want 1", path, m.Version)
	}
	return &m, nil
}

// Write stores the manifest at path atomically.
func (m *Manifest) Write(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("buildid: write manifest: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("buildid: write manifest: %w", err)
	}
	return nil
}

// ErrNotInManifest: the manifest has no entry for what was asked.
var ErrNotInManifest = errors.New("buildid: not in manifest")

// Lookup returns the entry for a component's intent.
func (m *Manifest) Lookup(component, intent string) (Entry, error) {
	for _, e := range m.Entries {
		if e.Component == component && e.Intent == intent {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("%w: %s %q", ErrNotInManifest, component, intent)
}

func (m *Manifest) binary(component string) (Binary, bool) {
	for _, b := range m.Binaries {
		if b.Component == component {
			return b, true
		}
	}
	return Binary{}, false
}

var selfCache sync.Map // intent -> id

// Self returns this process's build ID for intent. When m records the
// running executable's exact identity for component, the precomputed ID is
// used (the cheap path that keeps per-connection spawns fast); otherwise
// the running image is hashed through /proc/self/exe.
func Self(m *Manifest, component, intent string) (string, error) {
	if v, ok := selfCache.Load(intent); ok {
		return v.(string), nil
	}
	if m != nil {
		if b, ok := m.binary(component); ok {
			if id, err := Stat("/proc/self/exe"); err == nil && id == b.Identity {
				if e, err := m.Lookup(component, intent); err == nil {
					selfCache.Store(intent, e.BuildID)
					return e.BuildID, nil
				}
			}
		}
	}
	ids, err := OfFile("/proc/self/exe", intent)
	if err != nil {
		return "", err
	}
	selfCache.Store(intent, ids[0])
	return ids[0], nil
}
