package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// uidLockDir is where systemd's PID 1 reserves its dynamic users
// (src/core/dynamic-user.c): one file per id, named by the number, that
// holds the user's name and is flock'ed by whoever uses the id, for as
// long as they do; plus "direct:UID" -> NAME and "direct:NAME" -> UID
// symbolic links that nss-systemd reads. The runner takes its ids the same
// way, so two runners, or a runner and systemd, never hand out one id
// twice, and `ps` shows the names where nss-systemd is configured.
var uidLockDir = "/run/systemd/dynamic-uid"

// reservation is one id held for one dynamic user.
type reservation struct {
	f       *os.File
	uid     uint32
	name    string
	symlink []string // the direct: links this reservation made
}

// reserveUID takes id for name, or returns nil if someone else holds it.
func reserveUID(id uint32, name string) (*reservation, error) {
	if err := os.MkdirAll(uidLockDir, 0o755); err != nil {
		return nil, fmt.Errorf("runner: dynamic user lock directory: %w", err)
	}
	path := filepath.Join(uidLockDir, strconv.FormatUint(uint64(id), 10))
	for {
		fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("runner: reserve uid %d: %w", id, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("runner: reserve uid %d: %w", id, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("runner: reserve uid %d: %w", id, err)
		}
		if st.Nlink == 0 {
			// Its holder unlinked it between our open and our lock: the
			// next open makes a new one.
			unix.Close(fd)
			continue
		}
		f := os.NewFile(uintptr(fd), path)
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(name+"\n"), 0)
		}
		r := &reservation{f: f, uid: id, name: name}
		// The links are a convenience for name lookups: one that exists
		// already (another holder's name, or systemd's) stays as it is.
		for link, target := range map[string]string{
			"direct:" + strconv.FormatUint(uint64(id), 10): name,
			"direct:" + name: strconv.FormatUint(uint64(id), 10),
		} {
			p := filepath.Join(uidLockDir, link)
			if cur, err := os.Readlink(p); err == nil && cur == target || os.Symlink(target, p) == nil {
				r.symlink = append(r.symlink, p)
			}
		}
		return r, nil
	}
}

// release gives the id back: unlinked while still locked, as systemd does,
// so a waiter that opened the old file sees nlink 0 and starts over.
func (r *reservation) release() {
	str := strconv.FormatUint(uint64(r.uid), 10)
	for _, p := range r.symlink {
		if cur, err := os.Readlink(p); err == nil && (cur == r.name || cur == str) {
			os.Remove(p)
		}
	}
	os.Remove(r.f.Name())
	r.f.Close()
}

// processIDs is every uid and gid a running process has (real,
// effective, saved, filesystem): an id one of them holds is not free,
// whatever the passwd and group databases say.
func processIDs() map[uint32]bool {
	ids := map[uint32]bool{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return ids
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "Uid:") && !strings.HasPrefix(line, "Gid:") {
				continue
			}
			for _, v := range strings.Fields(line)[1:] {
				if n, err := strconv.ParseUint(v, 10, 32); err == nil {
					ids[uint32(n)] = true
				}
			}
		}
		f.Close()
	}
	return ids
}
