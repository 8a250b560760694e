package journal

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parse reads one datagram of the journal's native protocol.
func parse(t *testing.T, b []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			m[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		n := binary.LittleEndian.Uint64(b[nl+1 : nl+9])
		m[string(line)] = string(b[nl+9 : nl+9+int(n)])
		b = b[nl+9+int(n)+1:]
	}
	return m
}

func TestHandler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "socket")
	srv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var fallback bytes.Buffer
	h, err := New(path, "sluice-auth", slog.LevelInfo, slog.NewTextHandler(&fallback, nil))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h).With("helper", "auth")
	log.Info("rpc: call", "call", "enroll", "pid", 42, "uid", 0, "result", "forbidden", "duration", 1500*time.Microsecond)
	log.Debug("not sent")
	log.WithGroup("req").Warn("two\nlines", "user", "a\nb")

	buf := make([]byte, 65536)
	var got []map[string]string
	for i := 0; i < 2; i++ {
		n, err := srv.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, parse(t, buf[:n]))
	}
	for k, want := range map[string]string{
		"SLUICE_HELPER": "auth", "SLUICE_CALL": "enroll", "SLUICE_PID": "42", "SLUICE_UID": "0",
		"SLUICE_RESULT": "forbidden", "SLUICE_DURATION": "1.5ms", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "sluice-auth",
	} {
		if got[0][k] != want {
			t.Errorf("%s=%q, want %q (entry %v)", k, got[0][k], want, got[0])
		}
	}
	if !strings.HasPrefix(got[0]["MESSAGE"], "rpc: call ") || !strings.Contains(got[0]["MESSAGE"], "result=forbidden duration=1.5ms") {
		t.Errorf("MESSAGE %q", got[0]["MESSAGE"])
	}
	if got[1]["PRIORITY"] != "4" || got[1]["SLUICE_REQ_USER"] != "a\nb" || !strings.HasPrefix(got[1]["MESSAGE"], "two\nlines") {
		t.Errorf("second entry %v", got[1])
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback used: %s", fallback.String())
	}

	// With the journal gone, records go to the fallback, not nowhere.
	srv.Close()
	log.Info("after", "call", "x")
	if !strings.Contains(fallback.String(), "call=x") {
		t.Errorf("fallback got %q", fallback.String())
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{"call": "SLUICE_CALL", "server": "SLUICE_SERVER", "a.b-c": "SLUICE_A_B_C"} {
		if got := FieldName(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestStderrIsJournal(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	if StderrIsJournal() {
		t.Error("no JOURNAL_STREAM, yet stderr is the journal")
	}
	t.Setenv("JOURNAL_STREAM", "1:2")
	if StderrIsJournal() {
		t.Error("a JOURNAL_STREAM naming another file matched stderr")
	}
}
