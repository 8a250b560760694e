package helper

import (
	"log/slog"
	"os"
	"time"

	"sluice/internal/batchlog"
	"sluice/journal"
)

// DefaultLogDelay is how long BatchedLogger holds Info lines at most.
const DefaultLogDelay = 20 * time.Millisecond

// BatchedLogger is Logger for a long-running helper that logs a line per
// call (ptystore): the lines are gathered and written to stderr together
// (package batchlog), so a burst of calls wakes the reader of stderr (the
// runner, which parses every line back into a record) once per batch
// rather than once per call. Warn and Error go out at once. flush writes
// what is pending: call it before the process ends. Under systemd's
// journal (native entries) lines are not batched.
func BatchedLogger(name string, delay time.Duration) (log *slog.Logger, flush func()) {
	if journal.StderrIsJournal() || delay <= 0 {
		return Logger(name), func() {}
	}
	w := batchlog.New(os.Stderr, delay)
	return slog.New(batchlog.FlushOnWarn(slog.NewTextHandler(w, nil), w)).With("helper", name), w.Flush
}
