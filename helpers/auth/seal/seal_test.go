package seal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func newSealer(t *testing.T) *Sealer {
	t.Helper()
	key := make([]byte, KeySize)
	rand.Read(key)
	s, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpen(t *testing.T) {
	s := newSealer(t)
	other := newSealer(t)
	payload := []byte("challenge and user handle")
	box := s.Seal("login", payload, t0.Add(5*time.Minute))
	tests := []struct {
		name   string
		sealer *Sealer
		kind   string
		box    []byte
		now    time.Time
		want   error
	}{
		{"fresh", s, "login", box, t0, nil},
		{"just before expiry", s, "login", box, t0.Add(5*time.Minute - time.Millisecond), nil},
		{"at expiry", s, "login", box, t0.Add(5 * time.Minute), ErrExpired},
		{"wrong kind", s, "register", box, t0, ErrInvalid},
		{"kind prefix", s, "logi", box, t0, ErrInvalid},
		{"empty kind", s, "", box, t0, ErrInvalid},
		{"other key", other, "login", box, t0, ErrInvalid},
		{"other key and expired", other, "login", box, t0.Add(time.Hour), ErrInvalid},
		{"empty", s, "login", nil, t0, ErrInvalid},
		{"truncated", s, "login", box[:len(box)-1], t0, ErrInvalid},
		{"extended", s, "login", append(bytes.Clone(box), 0), t0, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := tt.sealer.Open(tt.kind, tt.box, tt.now)
			if tt.want == nil {
				if err != nil || !bytes.Equal(got, payload) {
					t.Fatalf("Open = %q, %v; want %q", got, err, payload)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open: %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Fatalf("Open returned a payload with error %v", err)
			}
		})
	}
}

// Any bit flipped anywhere in a box (version, expiry, nonce, ciphertext,
// tag) makes it invalid; in particular the clear expiry cannot be pushed.
func TestTamperEveryBit(t *testing.T) {
	s := newSealer(t)
	box := s.Seal("register", []byte("state"), t0.Add(time.Minute))
	for i := 0; i < len(box)*8; i++ {
		b := bytes.Clone(box)
		b[i/8] ^= 1 << (i % 8)
		if _, _, err := s.Open("register", b, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bit %d flipped: Open = %v, want ErrInvalid", i, err)
		}
	}
}

func TestBoxesDiffer(t *testing.T) {
	s := newSealer(t)
	a := s.Seal("login", []byte("same"), t0)
	b := s.Seal("login", []byte("same"), t0)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same payload are equal: nonce reused")
	}
	if bytes.Contains(a, []byte("same")) {
		t.Fatal("payload visible in the box")
	}
}

func TestNewKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New accepted a %d-byte key", n)
		}
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seal.key")

	// Racing creators all end up with the same key.
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = LoadOrCreateKey(path)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("creator %d got a different key", i)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != KeySize {
		t.Fatalf("key file mode %v size %d, want 0600 and %d", st.Mode().Perm(), st.Size(), KeySize)
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("reload = %x, %v", again, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}

	bad := filepath.Join(dir, "short.key")
	os.WriteFile(bad, []byte("short"), 0o600)
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Fatal("a short key file was accepted")
	}
	if _, err := LoadOrCreateKey(filepath.Join(dir, "no", "such", "dir", "seal.key")); err == nil {
		t.Fatal("creating a key in a missing directory succeeded")
	}
}
