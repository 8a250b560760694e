package record

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/helpers/record/recordtest"
	"sluice/msg"
)

var testKey = bytes.Repeat([]byte{7}, KeySize)

// writeCast makes a small recording and returns its bytes and the output
// it was given.
func writeCast(t *testing.T, end bool) ([]byte, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.cast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Unix(1_800_000_000, 0)
	w, err := NewWriter(f, testKey, Header{Version: 2, Width: 80, Height: 24, Timestamp: start.Unix(),
		Env: map[string]string{"TERM": "xterm-256color"}, Title: "alice@.host"}, start, 0)
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{"hello \x1b[1mworld\x1b[0m\r\n", "\"quoted\" \\ back\tslash\r\n", "ünïcödé → ✓ 😀\r\n", "\x00\x7f\u0085"}
	for i, o := range outs {
		if err := w.Event(start.Add(time.Duration(i+1)*time.Second), 'o', []byte(o)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Event(start.Add(5*time.Second), 'r', []byte("100x30")); err != nil {
		t.Fatal(err)
	}
	if end {
		if err := w.End(start.Add(6 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, strings.Join(outs, "")
}

// The o events of a recording decode to exactly the bytes given, and
// every line is JSON a player reads.
func TestWriterRoundTrip(t *testing.T) {
	b, want := writeCast(t, true)
	var got strings.Builder
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, l := range lines[1:] {
		var ev []any
		if err := json.Unmarshal([]byte(l), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("line %d %q: %v", i+2, l, err)
		}
		if ev[1] == "o" {
			got.WriteString(ev[2].(string))
		}
	}
	if got.String() != want {
		t.Fatalf("o events = %q, want %q", got.String(), want)
	}
	v, err := Verify(bytes.NewReader(b), testKey, false)
	if err != nil || v.State != msg.RecIntact {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	p := filepath.Join(t.TempDir(), "a.cast")
	os.WriteFile(p, b, 0o600)
	if out := recordtest.Cat(t, p); string(out) != want {
		t.Fatalf("asciinema cat:\n%q\nwant %q", out, want)
	}
}

func TestVerify(t *testing.T) {
	full, _ := writeCast(t, true)
	open, _ := writeCast(t, false)
	lastSeal := func(b []byte) int { return bytes.LastIndex(b[:len(b)-1], []byte("\n")) + 1 }
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	tests := []struct {
		name  string
		data  []byte
		key   []byte
		live  bool
		state string
	}{
		{"intact", full, testKey, false, msg.RecIntact},
		{"wrong key", full, bytes.Repeat([]byte{8}, KeySize), false, msg.RecAltered},
		{"a byte of output changed", bytes.Replace(full, []byte("hello"), []byte("HELLO"), 1), testKey, false, msg.RecAltered},
		{"header changed", bytes.Replace(full, []byte("alice@"), []byte("bobby@"), 1), testKey, false, msg.RecAltered},
		{"a seal flipped", flip(full, len(full)-5), testKey, false, msg.RecAltered},
		{"an event line removed", removeLine(full, 3), testKey, false, msg.RecAltered},
		{"end seal removed", full[:lastSeal(full)], testKey, false, msg.RecCut},
		{"cut in the middle of a line", full[:lastSeal(full)+5], testKey, false, msg.RecCut},
		{"recorder stopped (no end)", open, testKey, false, msg.RecCut},
		{"still being written", open, testKey, true, msg.RecLive},
		{"seal relabelled end", bytes.Replace(open[:], []byte(`"seal `), []byte(`"end  `), 1), testKey, false, msg.RecAltered},
		{"data after the end", append(bytes.Clone(full), []byte("[7.0, \"o\", \"x\"]\n")...), testKey, false, msg.RecAltered},
		{"empty", nil, testKey, false, msg.RecCut},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Verify(bytes.NewReader(tc.data), tc.key, tc.live)
			if err != nil {
				t.Fatal(err)
			}
			if v.State != tc.state {
				t.Fatalf("state %s (%s), want %s", v.State, v.Detail, tc.state)
			}
		})
	}
}

func removeLine(b []byte, n int) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	return bytes.Join(append(lines[:n:n], lines[n+1:]...), nil)
}

// A write the filesystem refuses leaves the file as it was at the last
// seal, and nothing more is written.
func TestWriterLimitKeepsFileWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.cast")
	f, _ := os.Create(path)
	defer f.Close()
	start := time.Now()
	w, err := NewWriter(f, testKey, Header{Version: 2, Width: 80, Height: 24}, start, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	for i := 0; i < 100 && lerr == nil; i++ {
		lerr = w.Event(start, 'o', []byte("0123456789"))
	}
	if lerr != ErrLimit {
		t.Fatalf("err = %v, want ErrLimit", lerr)
	}
	if err := w.Event(start, 'o', []byte("x")); err == nil {
		t.Fatal("a write after the limit succeeded")
	}
	b, _ := os.ReadFile(path)
	if int64(len(b)) != w.Size() || len(b) > 1000 {
		t.Fatalf("file %d bytes, writer says %d", len(b), w.Size())
	}
	if v, _ := Verify(bytes.NewReader(b), testKey, false); v.State != msg.RecCut || v.Sealed != int64(len(b)) {
		t.Fatalf("verify = %+v", v)
	}
}

func TestCompleteUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"abc", 3}, {"a\xc3", 1}, {"a\xc3\xbc", 3}, {"\xe2\x86", 0}, {"x\xf0\x9f\x98", 1}, {"x\xf0\x9f\x98\x80", 5}, {"\xff", 1},
	} {
		if got := completeUTF8([]byte(tc.in)); got != tc.want {
			t.Errorf("completeUTF8(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// appendJSONString is JSON that decodes to the bytes as text: each byte
// that is not UTF-8 a U+FFFD, everything else as it was (the run of
// printable ASCII goes in whole, the rest one by one).
func TestAppendJSONString(t *testing.T) {
	for _, in := range []string{
		"", "plain ascii", `quote " and \ backslash`, "tab\tnl\ncr\r esc\x1b[0m del\x7f",
		"ünïcödé €𝄞", "bad \xff\xfe byte", "split \xe2\x82", "c1 \u0085 next", `"\"`,
		"eight by eight plain runs\x00then a NUL and 0123456789abcdef\x7f\x1f\x20~",
		strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 2) + "\n" + strings.Repeat("x", 17) + "\"end",
	} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, []byte(in)), &got); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if want := string([]rune(in)); got != want {
			t.Errorf("%q: decoded %q, want %q", in, got, want)
		}
	}
}

// The eight-bytes-at-a-time path agrees with the byte-at-a-time test at
// every position of every byte value, alone and next to plain bytes:
// plain8 is exactly "all eight bytes printable ASCII, not '"' or '\'".
func TestPlain8(t *testing.T) {
	plainByte := func(c byte) bool { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' }
	for c := range 256 {
		for pos := range 8 {
			for _, fill := range []byte{'a', ' ', '~', 0x21, 0x7e} {
				w := bytes.Repeat([]byte{fill}, 8)
				w[pos] = byte(c)
				got := plain8(binary.LittleEndian.Uint64(w))
				if want := plainByte(byte(c)); got != want {
					t.Fatalf("plain8(%q) = %v, want %v", w, got, want)
				}
			}
		}
	}
	// Random words, against the byte test.
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		x := r.Uint64()
		if r.IntN(2) == 0 { // mostly printable, as output is
			x = x&0x3f3f3f3f3f3f3f3f | 0x4040404040404040
		}
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], x)
		want := true
		for _, c := range w {
			want = want && plainByte(c)
		}
		if got := plain8(x); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", w, got, want)
		}
	}
}
