package runner

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// A unit's processes log with slog's text handler on stderr (under
// systemd the journal takes native records instead, see package journal).
// The runner turns each such line back into a record of the unit's own
// time, level, message and fields, plus unit=NAME, and hands it to its
// handler: one record, not the helper's line quoted inside the runner's.
// A line that is not slog's text format (a panic, another program) is a
// record whose message is the line.

// unitRecord parses line, one line of slog.TextHandler output.
func unitRecord(line []byte, now time.Time) slog.Record {
	rec := slog.NewRecord(now, slog.LevelInfo, "", 0)
	var attrs []slog.Attr
	sawMsg := false
	rest := line
	for len(rest) > 0 {
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 {
			break
		}
		eq := bytes.IndexByte(rest, '=')
		sp := bytes.IndexByte(rest, ' ')
		if eq <= 0 || (sp >= 0 && sp < eq) {
			return plainRecord(line, now)
		}
		key := string(rest[:eq])
		rest = rest[eq+1:]
		var val string
		if len(rest) > 0 && rest[0] == '"' {
			end := quotedEnd(rest)
			if end < 0 {
				return plainRecord(line, now)
			}
			v, err := strconv.Unquote(string(rest[:end]))
			if err != nil {
				return plainRecord(line, now)
			}
			val, rest = v, rest[end:]
		} else {
			end := bytes.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = string(rest[:end]), rest[end:]
		}
		switch {
		case key == slog.TimeKey && len(attrs) == 0 && !sawMsg:
			if t, err := time.Parse(time.RFC3339Nano, val); err == nil {
				rec.Time = t
			}
		case key == slog.LevelKey && !sawMsg:
			rec.Level = parseLevel(val)
		case key == slog.MessageKey && !sawMsg:
			rec.Message, sawMsg = val, true
		default:
			attrs = append(attrs, slog.String(key, val))
		}
	}
	if !sawMsg {
		return plainRecord(line, now)
	}
	rec.AddAttrs(attrs...)
	return rec
}

func plainRecord(line []byte, now time.Time) slog.Record {
	return slog.NewRecord(now, slog.LevelInfo, string(line), 0)
}

// quotedEnd is the index just past the Go-quoted string at the start of b,
// or -1.
func quotedEnd(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// parseLevel reads slog's level names, with their offsets ("INFO+2").
func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// unitLogger hands a unit's records to the runner's handler with
// unit=NAME.
type unitLogger struct {
	h slog.Handler
}

func newUnitLogger(base *slog.Logger, unit string) unitLogger {
	return unitLogger{h: base.Handler().WithAttrs([]slog.Attr{slog.String("unit", unit)})}
}

func (l unitLogger) line(line []byte) {
	rec := unitRecord(line, time.Now())
	if l.h.Enabled(context.Background(), rec.Level) {
		l.h.Handle(context.Background(), rec)
	}
}
