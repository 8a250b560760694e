package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAcceptNoSocketNotPolled: the socket of an Accept=no unit is not in
// any of the runner's epoll sets, so a connection to the helper wakes the
// helper and not the runner as well; the unit is still served, and the
// path goes at stop.
func TestAcceptNoSocketNotPolled(t *testing.T) {
	h := start(t, `[`+svcUnit("svc", "")+`]`)
	h.mustCall("svc", request{Op: "whoami"})
	var st unix.Stat_t
	if err := unix.Fstat(int(h.r.units["svc"].sockFile.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	polled, err := epollInodes()
	if err != nil {
		t.Fatal(err)
	}
	if polled[st.Ino] {
		t.Fatalf("the svc socket (inode %d) is in the runner's epoll set: every call to svc wakes the runner", st.Ino)
	}
	path := h.r.SocketPath("svc")
	h.r.Stop()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket path after stop: %v", err)
	}
}

// epollInodes is the inodes of every file this process's epoll
// instances watch (/proc/self/fdinfo of each, "ino:" in hex).
func epollInodes() (map[uint64]bool, error) {
	fds, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	n := 0
	for _, f := range fds {
		if l, _ := os.Readlink(f); l != "anon_inode:[eventpoll]" {
			continue
		}
		b, err := os.ReadFile("/proc/self/fdinfo/" + filepath.Base(f))
		if err != nil {
			continue
		}
		n++
		for _, line := range strings.Split(string(b), "\n") {
			for _, field := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(field, "ino:"); ok && strings.HasPrefix(line, "tfd:") {
					ino, err := strconv.ParseUint(v, 16, 64)
					if err != nil {
						return nil, fmt.Errorf("fdinfo %q: %w", line, err)
					}
					out[ino] = true
				}
			}
		}
	}
	if n == 0 {
		return nil, errors.New("no epoll instance in this process")
	}
	return out, nil
}
