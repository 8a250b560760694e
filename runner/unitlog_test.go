package runner

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sluice/internal/testbuf"
	"strings"
	"testing"
	"time"
)

// TestUnitRecord: a helper's slog text line becomes a record of its own
// time, level, message and fields; anything else is a record whose
// message is the line.
func TestUnitRecord(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	// What a helper writes, made by slog itself.
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Warn("rpc: call", "server", "ptystore", "intent", `sluice v1 "web" to ptystore`,
		"uid", 61000, "err", "a=b c", "empty", "")
	helperLine := bytes.TrimRight(b.Bytes(), "\n")
	for _, tc := range []struct {
		name  string
		line  string
		level slog.Level
		msg   string
		attrs string
		own   bool // the helper's time
	}{
		{"slog text", string(helperLine), slog.LevelWarn, "rpc: call",
			`server=ptystore intent=sluice v1 "web" to ptystore uid=61000 err=a=b c empty=`, true},
		{"no time (journal style)", `level=ERROR msg="confine: failed" helper=x`, slog.LevelError, "confine: failed", "helper=x", false},
		{"level offset", `level=INFO+2 msg=m`, slog.LevelInfo + 2, "m", "", false},
		{"a panic", "panic: runtime error: index out of range [3] with length 2", slog.LevelInfo,
			"panic: runtime error: index out of range [3] with length 2", "", false},
		{"goroutine line", "goroutine 1 [running]:", slog.LevelInfo, "goroutine 1 [running]:", "", false},
		{"unterminated quote", `level=INFO msg="half`, slog.LevelInfo, `level=INFO msg="half`, "", false},
		{"no msg", `a=1 b=2`, slog.LevelInfo, `a=1 b=2`, "", false},
		{"empty", ``, slog.LevelInfo, ``, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := unitRecord([]byte(tc.line), now)
			var attrs []string
			rec.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.Key+"="+a.Value.String()); return true })
			if rec.Level != tc.level || rec.Message != tc.msg || strings.Join(attrs, " ") != tc.attrs {
				t.Fatalf("level %v msg %q attrs %q; want %v %q %q", rec.Level, rec.Message, strings.Join(attrs, " "), tc.level, tc.msg, tc.attrs)
			}
			if own := !rec.Time.Equal(now); own != tc.own {
				t.Fatalf("time %v (helper's own: %v, want %v)", rec.Time, own, tc.own)
			}
		})
	}
}

// TestUnitLogStructured: under the runner, a unit's log line arrives in
// the runner's handler as fields of their own, with unit=NAME, not as one
// quoted string.
func TestUnitLogStructured(t *testing.T) {
	var out testbuf.Buffer
	ul := newUnitLogger(slog.New(slog.NewJSONHandler(&out, nil)), "ptystore")
	ul.line([]byte(`time=2026-12-04T10:00:00.5Z level=INFO msg="ptystore: serving" helper=ptystore conns=3`))
	var m map[string]any
	if err := json.Unmarshal([]byte(out.String()), &m); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	want := map[string]any{"time": "2026-12-04T10:00:00.5Z", "level": "INFO", "msg": "ptystore: serving",
		"helper": "ptystore", "conns": "3", "unit": "ptystore"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (record %v)", k, m[k], v, m)
		}
	}
}

func BenchmarkUnitLogLine(b *testing.B) {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("rpc: call", "server", "ptystore",
		"intent", "sluice 2026-11-24 v1 web to ptystore client", "call", "pty-list", "pid", 4242, "uid", 61000,
		"result", "ok", "duration", 250*time.Microsecond)
	line := bytes.TrimRight(buf.Bytes(), "\n")
	base := slog.New(slog.NewTextHandler(&discard{}, nil))
	b.Run("structured", func(b *testing.B) {
		ul := newUnitLogger(base, "ptystore")
		for b.Loop() {
			ul.line(line)
		}
	})
	b.Run("quoted", func(b *testing.B) {
		log := base.With("unit", "ptystore")
		for b.Loop() {
			log.Info(string(line))
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
