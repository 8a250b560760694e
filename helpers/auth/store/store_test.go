package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func hash(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func enroll(t *testing.T, s *Store, name, token string, expires time.Time) User {
	t.Helper()
	u, err := s.Enroll(name, hash("handle of "+name), hash(token), expires, t0)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestEnrollRegisterUse(t *testing.T) {
	s := open(t, t.TempDir())
	u := enroll(t, s, "alice", "tok1", t0.Add(time.Hour))
	if u.Name != "alice" || !bytes.Equal(u.Handle, hash("handle of alice")) {
		t.Fatalf("user %+v", u)
	}
	// A second enrollment keeps the user's handle.
	u2, err := s.Enroll("alice", hash("other handle"), hash("tok2"), t0.Add(time.Hour), t0)
	if err != nil || !bytes.Equal(u2.Handle, u.Handle) {
		t.Fatalf("re-enroll: %+v, %v", u2, err)
	}
	tok, tu, err := s.Token(hash("tok1"), t0)
	if err != nil || tok.User != "alice" || tu.Name != "alice" {
		t.Fatalf("Token = %+v %+v %v", tok, tu, err)
	}
	if _, _, err := s.Token(hash("nope"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	if _, _, err := s.Token(hash("tok1"), t0.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: %v", err)
	}

	cr := Credential{ID: []byte("cred-1"), User: "alice", Data: []byte("data")}
	if err := s.Register(hash("tok1"), cr, t0); err != nil {
		t.Fatal(err)
	}
	// The token is spent.
	if err := s.Register(hash("tok1"), Credential{ID: []byte("cred-2"), User: "alice"}, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token reuse: %v", err)
	}
	// The same credential ID cannot be registered twice, and the failed
	// attempt does not spend the token.
	if err := s.Register(hash("tok2"), cr, t0); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate credential: %v", err)
	}
	if _, _, err := s.Token(hash("tok2"), t0); err != nil {
		t.Fatalf("token spent by a failed registration: %v", err)
	}
	// A token registers for its own user only.
	enroll(t, s, "bob", "tokb", t0.Add(time.Hour))
	if err := s.Register(hash("tokb"), Credential{ID: []byte("cred-3"), User: "alice"}, t0); err == nil {
		t.Fatal("bob's token registered a credential for alice")
	}

	got, err := s.Credential([]byte("cred-1"))
	if err != nil || got.User != "alice" || string(got.Data) != "data" || got.Created != t0.UnixMilli() {
		t.Fatalf("Credential = %+v, %v", got, err)
	}
	list, err := s.Credentials("alice")
	if err != nil || len(list) != 1 || string(list[0].ID) != "cred-1" {
		t.Fatalf("Credentials = %+v, %v", list, err)
	}
	if list, _ := s.Credentials("bob"); len(list) != 0 {
		t.Fatalf("bob has credentials %+v", list)
	}
	if byHandle, err := s.UserByHandle(u.Handle); err != nil || byHandle.Name != "alice" {
		t.Fatalf("UserByHandle = %+v, %v", byHandle, err)
	}

	until := t0.Add(5 * time.Minute)
	uses := []struct {
		name      string
		challenge string
		count     uint32
		want      error
	}{
		{"first", "c1", 1, nil},
		{"replayed challenge", "c1", 2, ErrReplay},
		{"counter forward", "c2", 5, nil},
		{"counter equal", "c3", 5, ErrCounter},
		{"counter back", "c4", 3, ErrCounter},
		{"counter to zero", "c5", 0, ErrCounter},
		{"counter forward again", "c6", 6, nil},
	}
	for _, tt := range uses {
		err := s.Use([]byte("cred-1"), hash(tt.challenge), until, tt.count, []byte("data "+tt.name), t0)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Fatalf("%s: Use = %v, want %v", tt.name, err, tt.want)
		}
	}
	got, _ = s.Credential([]byte("cred-1"))
	if got.SignCount != 6 || string(got.Data) != "data counter forward again" {
		t.Fatalf("after uses: %+v", got)
	}
	if used, err := s.ChallengeUsed(hash("c1"), t0); err != nil || !used {
		t.Fatalf("ChallengeUsed(c1) = %v, %v", used, err)
	}
	if used, _ := s.ChallengeUsed(hash("c1"), until); used {
		t.Fatal("challenge still used after its record expired")
	}
	// A refused use leaves no trace: its challenge stays fresh.
	if used, _ := s.ChallengeUsed(hash("c4"), t0); used {
		t.Fatal("a refused use recorded its challenge")
	}
	if err := s.Use([]byte("cred-1"), hash("c4"), until, 7, nil, t0); err != nil {
		t.Fatalf("challenge of a refused use: %v", err)
	}
	if err := s.Use([]byte("nope"), hash("c7"), until, 1, nil, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown credential: %v", err)
	}

	// Replay records and tokens expire and are pruned by later writes.
	if err := s.Use([]byte("cred-1"), hash("c8"), t0.Add(time.Minute), 8, nil, t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(2 * time.Hour)
	if err := s.Use([]byte("cred-1"), hash("c9"), later.Add(time.Minute), 9, nil, later); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bReplay).Stats().KeyN; n != 1 {
			t.Errorf("%d replay records after pruning, want 1", n)
		}
		if n := tx.Bucket(bTokens).Stats().KeyN; n != 0 {
			t.Errorf("%d tokens after pruning, want 0", n)
		}
		return nil
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestSchema(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bMeta).Put(kSchema, binary.BigEndian.AppendUint32(nil, SchemaVersion+1))
	})
	s.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("open of a newer schema: %v", err)
	}

	dir = t.TempDir()
	s, _ = Open(dir, Options{})
	s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bCreds) })
	s.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("open with a bucket missing: %v", err)
	}

	dir = t.TempDir()
	os.WriteFile(dir+"/"+FileName, bytes.Repeat([]byte("not a database "), 4096), 0o600)
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("opened a file that is not a database")
	}
}

// The reserve is allocated past the end of the file without changing its
// size.
func TestReserve(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Reserve: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ReserveErr != nil {
		t.Fatal(s.ReserveErr)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < 4<<20 {
		t.Fatalf("%d bytes allocated, want at least the 4 MiB reserve", st.Blocks*512)
	}
	if st.Size >= 4<<20 {
		t.Fatalf("file size %d: the reserve changed the size", st.Size)
	}
}

// --- crash consistency ---------------------------------------------------

const crashEnv = "SLUICE_STORE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir, os.Getenv(crashEnv+"_ROUND"))
		return
	}
	os.Exit(m.Run())
}

// credData is what credential id must hold: big enough (1-6 KiB) that
// commits split and allocate pages, and checkable byte for byte.
func credData(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return bytes.Repeat(h[:], 32+int(h[0])%160)
}

// crashChild writes until killed: each round enrolls and registers new
// credentials and signs in with earlier ones, printing an ack line only
// after the commit returned.
func crashChild(dir, round string) {
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	now := time.Now()
	var mine []string
	for i := 0; ; i++ {
		id := fmt.Sprintf("r%s-c%d", round, i)
		user := fmt.Sprintf("user%d", i%7)
		tok := hash("token " + id)
		if _, err := s.Enroll(user, hash("handle "+user), tok, now.Add(time.Hour), now); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		if err := s.Register(tok, Credential{ID: []byte(id), User: user, Data: credData(id)}, now); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Fprintf(w, "reg %s %s\n", id, user)
		w.Flush()
		mine = append(mine, id)
		if i%3 == 2 {
			use := mine[rand.IntN(len(mine))]
			cr, err := s.Credential([]byte(use))
			if err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
			n := cr.SignCount + 1
			if err := s.Use([]byte(use), hash(fmt.Sprintf("challenge %s %d", use, n)), now.Add(time.Minute), n, credData(use), now); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
			fmt.Fprintf(w, "use %s %d\n", use, n)
			w.Flush()
		}
	}
}

// TestCrashConsistency kills a writing process with SIGKILL at random
// moments, 20 times, and checks after each that the database opens, passes
// bbolt's consistency check, has its schema, and holds every credential
// (and every counter advance) that was acknowledged before the kill.
func TestCrashConsistency(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type acked struct {
		user  string
		count uint32
	}
	all := map[string]*acked{}
	for round := range 20 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashEnv+"_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		handle := func(line string) {
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "reg":
				all[f[1]] = &acked{user: f[2]}
			case len(f) == 3 && f[0] == "use":
				n, _ := strconv.ParseUint(f[2], 10, 32)
				if all[f[1]] == nil {
					t.Fatalf("use of unacknowledged %s", f[1])
				}
				all[f[1]].count = uint32(n)
			default:
				t.Fatalf("child said %q", line)
			}
		}
		// Kill after a random number of acknowledgements, and a random
		// few hundred microseconds more, so the kill lands anywhere in a
		// commit: before, between its syncs, or after.
		want := 1 + rand.IntN(25)
		for i := 0; i < want && sc.Scan(); i++ {
			handle(sc.Text())
		}
		time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		// Lines already written before the kill were acknowledged too.
		for sc.Scan() {
			handle(sc.Text())
		}
		cmd.Wait()

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if err := s.Check(); err != nil {
			s.Close()
			t.Fatalf("round %d: %v", round, err)
		}
		for id, a := range all {
			cr, err := s.Credential([]byte(id))
			if err != nil {
				s.Close()
				t.Fatalf("round %d: acknowledged credential %s lost: %v", round, id, err)
			}
			if cr.User != a.user || !bytes.Equal(cr.Data, credData(id)) {
				s.Close()
				t.Fatalf("round %d: credential %s corrupt: user %q, data %s...", round, id, cr.User, hex.EncodeToString(cr.Data[:min(8, len(cr.Data))]))
			}
			if cr.SignCount < a.count {
				s.Close()
				t.Fatalf("round %d: credential %s counter %d, acknowledged %d", round, id, cr.SignCount, a.count)
			}
		}
		s.Close()
	}
	if len(all) < 20 {
		t.Fatalf("only %d credentials written in 20 rounds", len(all))
	}
	t.Logf("%d acknowledged credentials survived 20 kills", len(all))
}

// TestLocks: a read-write open excludes every other open, read-only opens
// share; a wait past LockTimeout is ErrBusy. The opens are separate open
// file descriptions, which flock treats as separate holders even within
// one process, as it does for two sluice-auth processes.
func TestLocks(t *testing.T) {
	dir := t.TempDir()
	open(t, dir).Close()
	short := Options{LockTimeout: 100 * time.Millisecond}
	rw := func() (*Store, error) { return Open(dir, short) }
	ro := func() (*Store, error) { return OpenReadOnly(dir, short) }
	tests := []struct {
		name       string
		held, then func() (*Store, error)
		busy       bool
	}{
		{"read-write then read-write", rw, rw, true},
		{"read-write then read-only", rw, ro, true},
		{"read-only then read-write", ro, rw, true},
		{"read-only then read-only", ro, ro, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := tt.held()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			s, err := tt.then()
			if err == nil {
				s.Close()
			}
			if tt.busy && !errors.Is(err, ErrBusy) || !tt.busy && err != nil {
				t.Fatalf("second open: %v, want busy %v", err, tt.busy)
			}
		})
	}
}

// A read-only open cannot write, and reads what was written.
func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	enroll(t, s, "alice", "tok", t0.Add(time.Hour))
	s.Close()
	r, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, err := r.Token(hash("tok"), t0); err != nil {
		t.Fatalf("token through a read-only open: %v", err)
	}
	if _, err := r.Enroll("bob", hash("hb"), hash("tb"), t0.Add(time.Hour), t0); !errors.Is(err, bolt.ErrDatabaseReadOnly) {
		t.Fatalf("enroll through a read-only open: %v", err)
	}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
}

// A read-only open of a store that does not exist yet, or whose file a
// creator left empty, makes it.
func TestReadOnlyCreates(t *testing.T) {
	for _, empty := range []bool{false, true} {
		dir := t.TempDir()
		if empty {
			os.WriteFile(dir+"/"+FileName, nil, 0o600)
		}
		s, err := OpenReadOnly(dir, Options{})
		if err != nil {
			t.Fatalf("empty %v: %v", empty, err)
		}
		if _, err := s.User("alice"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("empty %v: user in a new store: %v", empty, err)
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// Lazy holds no lock between operations: another holder of the
// read-write lock can open in between, and an operation while it holds
// the lock is busy.
func TestLazy(t *testing.T) {
	dir := t.TempDir()
	l := NewLazy(dir, Options{LockTimeout: 100 * time.Millisecond}, nil)
	if _, err := l.User("alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("user in a new store: %v", err)
	}
	if _, err := l.Enroll("alice", hash("ha"), hash("tok"), t0.Add(time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	other, err := Open(dir, Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("open while Lazy is idle: %v", err)
	}
	if _, err := l.User("alice"); !errors.Is(err, ErrBusy) {
		t.Fatalf("read while another holds the write lock: %v", err)
	}
	if err := l.Register(hash("tok"), Credential{ID: []byte("c"), User: "alice"}, t0); !errors.Is(err, ErrBusy) {
		t.Fatalf("write while another holds the write lock: %v", err)
	}
	other.Close()
	if err := l.Register(hash("tok"), Credential{ID: []byte("c"), User: "alice"}, t0); err != nil {
		t.Fatal(err)
	}
	if err := l.Use([]byte("c"), hash("ch"), t0.Add(time.Minute), 1, nil, t0); err != nil {
		t.Fatal(err)
	}
	if cr, err := l.Credential([]byte("c")); err != nil || cr.SignCount != 1 {
		t.Fatalf("credential %+v, %v", cr, err)
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
}
