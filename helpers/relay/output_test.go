package relay

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/pty"
)

// writes records each Write to the channel.
type writes struct {
	mu  sync.Mutex
	all [][]byte
	got chan struct{}
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.all = append(w.all, bytes.Clone(p))
	w.mu.Unlock()
	select {
	case w.got <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *writes) bytes() ([]byte, int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	largest := 0
	for _, p := range w.all {
		largest = max(largest, len(p))
	}
	return bytes.Join(w.all, nil), len(w.all), largest
}

func rawPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err == nil {
		MakeRaw(tm)
		err = unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tm)
	}
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// A flood arrives whole and in order, gathered into writes larger than
// pty reads (4 KiB); a key's echo is written alone, at once, with
// nothing after it; the session's end ends the copy without an error.
func TestCopyOut(t *testing.T) {
	master, slave := rawPty(t)
	defer master.Close()
	w := &writes{got: make(chan struct{}, 1)}
	copied := make(chan error, 1)
	go func() { copied <- copyOut(w, master) }()

	slave.Write([]byte("k"))
	select {
	case <-w.got:
	case <-time.After(5 * time.Second):
		t.Fatal("a lone key's echo was held back")
	}
	if b, n, _ := w.bytes(); string(b) != "k" || n != 1 {
		t.Fatalf("wrote %q in %d writes, want k in one", b, n)
	}

	flood := make([]byte, 1<<20)
	for i := range flood {
		flood[i] = byte(i*7 + i>>12)
	}
	go func() { slave.Write(flood); slave.Close() }()
	select {
	case err := <-copied:
		if err != nil {
			t.Fatalf("copy: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("copy goes on after the session ended")
	}
	b, n, largest := w.bytes()
	if !bytes.Equal(b[1:], flood) {
		t.Fatalf("copied %d bytes, not the flood's %d", len(b)-1, len(flood))
	}
	// A pty read is at most about 4 KiB (now and then a little more, when
	// the kernel refills during it): gathered, the writes average more.
	if largest > gatherMax || (n-1)*6<<10 > len(flood) {
		t.Fatalf("1 MiB in %d writes, the largest %d bytes: want them gathered (%d bytes on average at least 6 KiB, each at most %d)",
			n-1, largest, len(flood)/(n-1), gatherMax)
	}
	t.Logf("1 MiB in %d writes, the largest %d bytes", n-1, largest)
}
