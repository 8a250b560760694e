package batchlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is a bytes.Buffer that counts the writes it gets.
type syncBuf struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuf) get() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

// TestBatch: Info lines wait for the batch (one write for many), a
// Warn goes out at once with the lines before it in order, Flush writes
// the rest, and a batch never grows past maxBatch.
func TestBatch(t *testing.T) {
	out := &syncBuf{}
	bw := New(out, time.Hour)
	log := slog.New(flushOnWarn{slog.NewTextHandler(bw, nil), bw})
	for i := range 10 {
		log.Info("call", "n", i)
	}
	if s, n := out.get(); n != 0 || s != "" {
		t.Fatalf("info lines written before the batch was due: %d writes", n)
	}
	log.Warn("refused")
	s, n := out.get()
	if n != 1 || strings.Count(s, "msg=call") != 10 || !strings.HasSuffix(s, "msg=refused\n") {
		t.Fatalf("after a warning: %d writes of %q", n, s)
	}
	log.Info("after")
	bw.Flush()
	if s, n := out.get(); n != 2 || !strings.HasSuffix(s, "msg=after\n") {
		t.Fatalf("flush: %d writes, %q", n, s)
	}
	big := strings.Repeat("x", 1000)
	for range 2 * maxBatch / 1000 {
		log.Info(big)
	}
	if _, n := out.get(); n < 3 {
		t.Errorf("%d KiB of lines held without a write", 2*maxBatch>>10)
	}
	bw.mu.Lock()
	held := len(bw.buf)
	bw.mu.Unlock()
	if held >= maxBatch {
		t.Errorf("%d bytes held, batch limit %d", held, maxBatch)
	}

	// With a short delay the timer writes the batch by itself.
	out2 := &syncBuf{}
	bw2 := New(out2, 5*time.Millisecond)
	log2 := slog.New(flushOnWarn{slog.NewTextHandler(bw2, nil), bw2})
	for range 5 {
		log2.Info("call")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, n := out2.get()
		if strings.Count(s, "msg=call") == 5 {
			if n != 1 {
				t.Errorf("5 lines in %d writes, want 1", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch never written: %q", s)
		}
		time.Sleep(time.Millisecond)
	}
}
