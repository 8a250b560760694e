// Package journal is a log/slog handler that writes to the systemd
// journal's native socket, so each attribute of a log record becomes a
// journal field an admin can filter on (journalctl SLUICE_CALL=enroll
// SLUICE_RESULT=forbidden) instead of text inside MESSAGE.
//
// Field names are the attribute keys upper-cased with SLUICE_ in front
// (the journal's own PID, UID and the like are trusted fields it adds by
// itself; a caller's pid must not look like one of them).
package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Socket is the journal's native protocol socket.
const Socket = "/run/systemd/journal/socket"

// Handler sends records to the journal. A record that cannot be sent is
// written as text to Fallback instead, so nothing is lost silently.
type Handler struct {
	conn     *net.UnixConn
	ident    string
	level    slog.Leveler
	attrs    []slog.Attr
	groups   []string
	fallback slog.Handler
	mu       *sync.Mutex
}

// StderrIsJournal reports whether stderr is connected to the journal, as
// systemd says in $JOURNAL_STREAM ("device:inode" of the stream).
func StderrIsJournal() bool {
	v := os.Getenv("JOURNAL_STREAM")
	dev, ino, ok := strings.Cut(v, ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return strconv.FormatUint(st.Dev, 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// New connects to the journal socket at path. ident is SYSLOG_IDENTIFIER.
func New(path, ident string, level slog.Leveler, fallback slog.Handler) (*Handler, error) {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{conn: c, ident: ident, level: level, fallback: fallback, mu: &sync.Mutex{}}, nil
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr{}, h.attrs...), qualify(h.groups, as)...)
	if h.fallback != nil {
		n.fallback = h.fallback.WithAttrs(as)
	}
	return &n
}

func (h *Handler) WithGroup(name string) slog.Handler {
	n := *h
	n.groups = append(append([]string{}, h.groups...), name)
	if h.fallback != nil {
		n.fallback = h.fallback.WithGroup(name)
	}
	return &n
}

func qualify(groups []string, as []slog.Attr) []slog.Attr {
	if len(groups) == 0 {
		return as
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: strings.Join(groups, "_") + "_" + a.Key, Value: a.Value}
	}
	return out
}

// priority maps slog levels to syslog priorities.
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// FieldName turns an attribute key into a journal field name.
func FieldName(key string) string {
	var b strings.Builder
	b.WriteString("SLUICE_")
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() > 64 {
		return b.String()[:64]
	}
	return b.String()
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	field := func(k, v string) {
		if strings.ContainsRune(v, '\n') {
			// Binary-safe form: name, newline, 64-bit LE length, value.
			buf.WriteString(k)
			buf.WriteByte('\n')
			binary.Write(&buf, binary.LittleEndian, uint64(len(v)))
			buf.WriteString(v)
			buf.WriteByte('\n')
			return
		}
		buf.WriteString(k)
		buf.WriteByte('=')
		buf.WriteString(v)
		buf.WriteByte('\n')
	}
	// MESSAGE keeps the text form too, for plain journalctl.
	var text strings.Builder
	text.WriteString(r.Message)
	add := func(a slog.Attr) {
		a.Value = a.Value.Resolve()
		if a.Equal(slog.Attr{}) {
			return
		}
		v := a.Value.String()
		if a.Value.Kind() == slog.KindDuration {
			v = a.Value.Duration().String()
		}
		field(FieldName(a.Key), v)
		// As slog's text handler writes it, so MESSAGE reads the same
		// under systemd and under the runner.
		if v == "" || strings.ContainsAny(v, " \"=\n\t\\") {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&text, " %s=%s", a.Key, v)
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool {
		for _, q := range qualify(h.groups, []slog.Attr{a}) {
			add(q)
		}
		return true
	})
	field("PRIORITY", strconv.Itoa(priority(r.Level)))
	field("SYSLOG_IDENTIFIER", h.ident)
	if !r.Time.IsZero() {
		field("SLUICE_TIME", r.Time.UTC().Format(time.RFC3339Nano))
	}
	field("MESSAGE", text.String())
	h.mu.Lock()
	_, err := h.conn.Write(buf.Bytes())
	h.mu.Unlock()
	if err != nil && h.fallback != nil {
		// Too big for one datagram, or the journal is gone: the text
		// handler on stderr, which the journal also collects.
		return h.fallback.Handle(ctx, r)
	}
	return err
}
