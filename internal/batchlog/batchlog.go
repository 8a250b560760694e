// Package batchlog batches log lines on their way to a pipe: a process
// that logs a line per call (a long-running helper, and the runner that
// passes every unit's lines on) would otherwise wake its reader once per
// call. Info lines wait up to a delay; a Warn or Error goes out at once
// with everything before it, in order. What is pending when the process
// dies is lost: at most one delay's worth of lines.
package batchlog

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// New returns a Writer passing batches on to w, each at most delay after
// its first write.
func New(w io.Writer, delay time.Duration) *Writer { return &Writer{w: w, delay: delay} }

// maxBatch is the most a batch holds before it is written at once.
const maxBatch = 64 << 10

// Writer gathers writes and passes them on together, at most its delay after
// the first of a batch, or at once when a batch reaches 64 KiB.
type Writer struct {
	w     io.Writer
	delay time.Duration

	mu    sync.Mutex
	buf   []byte
	armed bool
}

func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) >= maxBatch {
		b.flushLocked()
	} else if !b.armed {
		b.armed = true
		time.AfterFunc(b.delay, func() {
			b.mu.Lock()
			b.armed = false
			b.flushLocked()
			b.mu.Unlock()
		})
	}
	return len(p), nil
}

// Flush writes what is pending.
func (b *Writer) Flush() {
	b.mu.Lock()
	b.flushLocked()
	b.mu.Unlock()
}

func (b *Writer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	// A failed write (stderr gone) loses the batch as it would have lost
	// the lines; there is nowhere to say so.
	b.w.Write(b.buf)
	if cap(b.buf) > maxBatch*2 {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
}

// FlushOnWarn wraps h, which writes to w, so that a Warn or Error record,
// and what came before it, is written at once.
func FlushOnWarn(h slog.Handler, w *Writer) slog.Handler { return flushOnWarn{h, w} }

// flushOnWarn writes a Warn or Error record, and what came before it, at
// once.
type flushOnWarn struct {
	slog.Handler
	b *Writer
}

func (h flushOnWarn) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.b.Flush()
	}
	return err
}

func (h flushOnWarn) WithAttrs(as []slog.Attr) slog.Handler {
	return flushOnWarn{h.Handler.WithAttrs(as), h.b}
}

func (h flushOnWarn) WithGroup(name string) slog.Handler {
	return flushOnWarn{h.Handler.WithGroup(name), h.b}
}
