package fleet

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/helpers/relay"
	"sluice/internal/pty"
	"sluice/tests/fleet/fleetenv"
	"sluice/tests/softauthn"
	"sluice/tests/suiterun"
)

// genEnv makes a copy of this test binary the seeded generator of the
// byte-checked sessions: "SEED,SIZE" prints SIZE bytes of stream SEED.
const genEnv = "SLUICE_FLEET_GEN"

func TestMain(m *testing.M) {
	if v := os.Getenv(genEnv); v != "" {
		if err := generate(v); err != nil {
			fmt.Fprintln(os.Stderr, "fleet: generator:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func generate(v string) error {
	seedText, sizeText, ok := strings.Cut(v, ",")
	seed, err1 := strconv.ParseUint(seedText, 10, 64)
	size, err2 := strconv.Atoi(sizeText)
	if !ok || err1 != nil || err2 != nil || size < 0 {
		return fmt.Errorf("%s=%q, want SEED,SIZE", genEnv, v)
	}
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	g := newStream(seed)
	for range size {
		w.WriteByte(g.next())
	}
	return w.Flush()
}

// stream is session seed's pseudo-random bytes, printable so that no
// terminal on the way could take one for a control character.
type stream struct {
	src *rand.ChaCha8
	buf [4096]byte
	i   int
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-"

func newStream(seed uint64) *stream {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(seed >> (8 * i))
	}
	s := &stream{src: rand.NewChaCha8(k)}
	s.i = len(s.buf)
	return s
}

func (s *stream) next() byte {
	if s.i == len(s.buf) {
		s.src.Read(s.buf[:])
		s.i = 0
	}
	b := alphabet[s.buf[s.i]&63]
	s.i++
	return b
}

// genBin is this test binary copied where a host's root shell can run it
// (the go tool's own directory may be private to another mount or user).
func genBin(tb testing.TB, e *env) string {
	tb.Helper()
	dir := filepath.Join(e.Dir, "gen")
	dst := filepath.Join(dir, "fleet.test")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(dst, b, 0o755)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return dst
}

// pageUser enrolls name at the gateway and registers a passkey for it
// through the gateway's page.
func pageUser(tb testing.TB, e *env, name string) *softauthn.Authenticator {
	tb.Helper()
	tok, err := e.GW.Enroll(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := e.GW.Dial()
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	a := softauthn.New("localhost", e.GW.Origin)
	if err := b.Register(a, tok); err != nil {
		tb.Fatal(err)
	}
	return a
}

// signedIn is a page of the gateway's frontend signed in with a.
func signedIn(e *env, a *softauthn.Authenticator) (*suiterun.Browser, error) {
	b, err := e.GW.Dial()
	if err != nil {
		return nil, err
	}
	if err := b.SignIn(a); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// openOn asks the page for a root shell on host (or, with id, to attach
// to that session of host) and returns the session's ID once attached.
func openOn(b *suiterun.Browser, host, id string) (string, error) {
	m := map[string]any{"t": "create", "host": host, "machine": ".host", "user": "root", "cols": 120, "rows": 40}
	if id != "" {
		m = map[string]any{"t": "attach", "host": host, "id": id, "cols": 120, "rows": 40}
	}
	if err := b.Send(m); err != nil {
		return "", err
	}
	at, err := b.Expect("attached")
	if err != nil {
		return "", fmt.Errorf("%s on %s: %w", m["t"], host, err)
	}
	sess, _ := at["session"].(map[string]any)
	got, _ := sess["id"].(string)
	return got, nil
}

// remotePage signs in with a, opens a root shell on host through the
// gateway and waits until the shell reads input. It returns errors, for
// many goroutines.
func remotePage(e *env, a *softauthn.Authenticator, host string) (*suiterun.Browser, string, error) {
	b, err := signedIn(e, a)
	if err != nil {
		return nil, "", err
	}
	id, err := openOn(b, host, "")
	if err == nil {
		err = b.Ready()
	}
	if err != nil {
		b.Close()
		return nil, "", fmt.Errorf("%s: %w", host, err)
	}
	return b, id, nil
}

// plainSSH runs `ssh -tt` to h as fleetenv.PlainUser with command, on a
// pty of this process as a user's terminal is (raw, as the fleet makes
// its own), and returns the pty's master.
func plainSSH(tb testing.TB, e *env, h *fleetenv.Host, command string) (*os.File, func()) {
	tb.Helper()
	m, s, err := pty.Open()
	if err != nil {
		tb.Fatal(err)
	}
	t, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err == nil {
		relay.MakeRaw(t)
		err = unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, t)
	}
	if err == nil {
		err = pty.SetSize(s, 40, 120)
	}
	if err != nil {
		tb.Fatal(err)
	}
	cmd := e.PlainSSH(h, command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	err = cmd.Start()
	s.Close()
	if err != nil {
		m.Close()
		tb.Fatal(err)
	}
	return m, func() { m.Close(); cmd.Process.Kill(); cmd.Wait() }
}

// readUntil reads f until want has been seen.
func readUntil(f *os.File, want string) error {
	var seen []byte
	buf := make([]byte, 1)
	for !strings.Contains(string(seen), want) {
		if _, err := f.Read(buf); err != nil {
			return fmt.Errorf("waiting for %q: %w; read %q", want, err, tail(string(seen), 400))
		}
		seen = append(seen, buf[0])
	}
	return nil
}
