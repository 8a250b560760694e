// Package confine is what a helper does to itself right after it has its
// socket: no new privileges, a Landlock ruleset over the filesystem (where
// the kernel has Landlock), and a seccomp-bpf allowlist of system calls.
// systemd's SystemCallFilter= and sandboxing do much the same from the
// outside; doing it from the inside too means a helper is confined the
// same way under the embedded runner, in a container, or started by hand.
//
// The filter is written by hand as classic BPF (no cgo, no libseccomp).
// Unlisted calls fail with EPERM, so code that probes for a newer call
// degrades instead of dying; a short list of calls no helper has any
// business making (ptrace, mount, module loading, namespaces, bpf, ...)
// kill the process, which leaves a clear trace in the journal.
//
// Landlock and no_new_privs are per thread; a Go program already has
// several threads by the time main runs. no_new_privs reaches them with
// the seccomp filter, which the kernel syncs to every thread
// (SECCOMP_FILTER_FLAG_TSYNC, which carries the caller's no_new_privs);
// Landlock is enforced after that through syscall.AllThreadsSyscall,
// which works only in binaries built with CGO_ENABLED=0 (as the helpers
// are). So a cgo build (a test's plain go build) still gets the filter
// and no_new_privs everywhere, only no Landlock. The filter lets
// landlock_restrict_self (flags 0) through for that last step; it can
// only ever narrow what the process may do.
package confine

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Profile says what a helper needs after startup.
type Profile struct {
	// Name, for errors and logs.
	Name string
	// Read lists files and directories (and everything beneath) the helper
	// may read. Its own executable's directory is added when reachable: the build
	// manifest lives there and the handshake hashes the executable.
	Read []string
	// Write lists files and directories the helper may read, write, create
	// and remove beneath (a state directory).
	Write []string
	// Exec allows starting programs (execve, fork-style clone, wait):
	// only for a helper that spawns, like the shell helper's pty backend.
	Exec bool
	// Inet allows creating AF_INET/AF_INET6 sockets. No helper needs it:
	// even the frontend only accepts on a TCP socket it was handed.
	Inet bool
	// Signal allows kill(2), pidfd_open(2) and pidfd_send_signal(2) to
	// processes outside the helper (the hangup helper ends sessions).
	Signal bool
	// Pty allows opening new ptys: /dev/ptmx, and the slave beneath
	// /dev/pts (TIOCGPTPEER opens it there), with their ioctls. No helper
	// sets it now: the shell helper's machined backend did, for a recorded
	// session's outer pty, until the recorder answered with a socket.
	Pty bool
	// Listen is the --listen socket path, if any: the helper creates it
	// after confining itself and removes it on exit, so its directory
	// is writable.
	Listen string
}

// Status is what Apply managed to install.
type Status struct {
	Landlock int  // Landlock ABI version used; 0 when not applied
	Seccomp  bool // the syscall filter is installed
	Cgo      bool // built with cgo: Landlock could not reach every thread
	// Refused is set when the Landlock calls were refused by a filter
	// from outside (a container runtime's, or a unit whose
	// SystemCallFilter= lacks them): the helper runs without Landlock,
	// and says so.
	Refused error
}

func (s Status) String() string {
	ll := "landlock unavailable"
	switch {
	case s.Cgo:
		ll = "no landlock (cgo build)"
	case s.Refused != nil:
		ll = "no landlock (" + s.Refused.Error() + ")"
	case s.Landlock > 0:
		ll = fmt.Sprintf("landlock ABI %d", s.Landlock)
	}
	return fmt.Sprintf("no_new_privs, %s, seccomp=%v", ll, s.Seccomp)
}

// errCgo: AllThreadsSyscall is not available in a cgo binary.
var errCgo = errors.New("confine: built with cgo")

// Apply confines the calling process for good. It must be called once,
// after the helper has opened its sockets, files and D-Bus connection,
// and before it serves anything.
func Apply(p Profile) (Status, error) {
	var st Status
	// Everything below runs on this one thread: the seccomp sync hands
	// its no_new_privs to the others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return st, fmt.Errorf("confine %s: no_new_privs: %w", p.Name, err)
	}
	// The executable's directory only when this process can reach it: a
	// runner that executes helpers by fd may start them from a directory
	// their users cannot traverse (a checkout in /root). They need nothing
	// from it then: the manifest comes by $SLUICE_MANIFEST and the image
	// is hashed through /proc/self/exe.
	if exe, err := os.Executable(); err == nil {
		if d := filepath.Dir(exe); unix.Access(d, unix.X_OK) == nil {
			p.Read = append(p.Read, d)
		}
	}
	if p.Listen != "" {
		p.Write = append(p.Write, filepath.Dir(p.Listen))
	}
	// The ruleset is built now, while the landlock calls are allowed, and
	// enforced after the filter: every thread needs no_new_privs for
	// landlock_restrict_self, and the filter's TSYNC gives it to all of
	// them in the one call, where setting it on each thread would take a
	// round of signals to every thread of its own (half a millisecond of
	// every Accept=yes call, bench/NOTES.md).
	rs := -1
	if cgoBuild {
		st.Cgo = true
	} else if _, err := abi(); err != nil {
		st.Refused = err
	} else if fd, v, err := ruleset(p); err != nil {
		return st, fmt.Errorf("confine %s: landlock: %w", p.Name, err)
	} else if v > 0 {
		rs, st.Landlock = fd, v
		defer unix.Close(rs)
	}
	if nativeArch == 0 {
		// No table for this architecture, so no TSYNC to carry
		// no_new_privs: every thread sets it itself. Status says
		// there is no filter; the helper logs it.
		if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil && !errors.Is(err, errCgo) {
			return st, fmt.Errorf("confine %s: no_new_privs: %w", p.Name, err)
		}
	} else {
		if err := seccomp(p, rs); err != nil {
			return st, fmt.Errorf("confine %s: seccomp: %w", p.Name, err)
		}
		st.Seccomp = true
	}
	if rs >= 0 {
		err := allThreads(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(rs), 0, 0)
		switch {
		case errors.Is(err, errCgo):
			// A cgo build cannot reach every thread; rather no Landlock
			// than Landlock on some threads only.
			st.Cgo, st.Landlock = true, 0
		case err != nil:
			return st, fmt.Errorf("confine %s: landlock: restrict self: %w", p.Name, err)
		}
	}
	return st, nil
}

// Helper is the one call a helper's main makes once its sockets and
// files are open: Apply, log what it got, exit on failure.
func Helper(log *slog.Logger, p Profile) {
	st, err := Apply(p)
	if err != nil {
		log.Error("confine: failed", "err", err)
		os.Exit(1)
	}
	if st.Refused != nil {
		log.Warn("confine: running without Landlock", "name", p.Name, "how", st.String())
		return
	}
	log.Debug("confined", "name", p.Name, "how", st.String())
}

func allThreads(trap, a1, a2, a3 uintptr) error {
	_, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3)
	if e == syscall.ENOTSUP {
		return errCgo
	}
	if e != 0 {
		return e
	}
	return nil
}

// Landlock access rights by the ABI version that introduced them.
const (
	fsV1 = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	fsV2 = fsV1 | unix.LANDLOCK_ACCESS_FS_REFER
	fsV3 = fsV2 | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	fsV5 = fsV3 | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV

	netV4 = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP

	scopeV6 = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL

	readRights  = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	writeRights = readRights | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
		unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_REFER |
		unix.LANDLOCK_ACCESS_FS_TRUNCATE
)

// rulesetAttr is struct landlock_ruleset_attr as of ABI 6; older kernels
// get a prefix of it (the size passed says which fields exist).
type rulesetAttr struct {
	fs, net, scoped uint64
}

// ABI returns the kernel's Landlock ABI version, 0 if it has none (not
// built, or disabled at boot).
func ABI() int {
	v, _ := abi()
	return v
}

// abi tells "no Landlock here" (ENOSYS, EOPNOTSUPP: 0 and no error) from
// "the call was refused" (EPERM from a seccomp filter outside that does
// not know the landlock calls: an error, so it gets logged).
func abi() (int, error) {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	switch e {
	case 0:
		return int(v), nil
	case unix.ENOSYS, unix.EOPNOTSUPP:
		return 0, nil
	}
	return 0, fmt.Errorf("landlock_create_ruleset refused: %w", e)
}

// ruleset makes the Landlock ruleset for p and returns its fd with the
// ABI version it was made for (0 and no fd when the kernel has no
// Landlock); the caller enforces and closes it.
func ruleset(p Profile) (int, int, error) {
	abi, _ := abi()
	if abi == 0 {
		return -1, 0, nil
	}
	attr := rulesetAttr{fs: fsV1}
	size := uintptr(8) // the fields known to this ABI: fs, then net, then scoped
	switch {
	case abi >= 5:
		attr.fs = fsV5
	case abi >= 3:
		attr.fs = fsV3
	case abi >= 2:
		attr.fs = fsV2
	}
	if abi >= 4 {
		// No TCP bind or connect at all: the frontend's listening socket
		// comes from systemd or the runner, ready-made.
		attr.net, size = netV4, 16
	}
	if abi >= 6 {
		attr.scoped, size = scopeV6, 24
		if p.Signal {
			attr.scoped &^= unix.LANDLOCK_SCOPE_SIGNAL
		}
	}
	fd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if e != 0 {
		return -1, 0, fmt.Errorf("create ruleset: %w", e)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(int(fd))
		}
	}()
	add := func(path string, rights uint64) error {
		f, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				// A path that does not exist cannot be reached either;
				// nothing to allow (a state directory is created before).
				return nil
			}
			return fmt.Errorf("open %s: %w", path, err)
		}
		defer unix.Close(f)
		var st unix.Stat_t
		if err := unix.Fstat(f, &st); err != nil {
			return fmt.Errorf("stat %s: %w", path, err)
		}
		rights &= attr.fs
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			// Rules on files take only rights that apply to files.
			rights &= unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
				unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: rights, Parent_fd: int32(f)}
		if _, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH,
			uintptr(unsafe.Pointer(&rule)), 0, 0, 0); e != 0 {
			return fmt.Errorf("add rule %s: %w", path, e)
		}
		return nil
	}
	for _, path := range p.Read {
		if err := add(path, readRights); err != nil {
			return -1, 0, err
		}
	}
	for _, path := range p.Write {
		if err := add(path, writeRights); err != nil {
			return -1, 0, err
		}
	}
	if p.Exec {
		for _, path := range []string{"/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"} {
			if err := add(path, readRights|unix.LANDLOCK_ACCESS_FS_EXECUTE); err != nil {
				return -1, 0, err
			}
		}
	}
	if p.Pty {
		for _, path := range []string{"/dev/ptmx", "/dev/pts"} {
			if err := add(path, readRights|unix.LANDLOCK_ACCESS_FS_WRITE_FILE|unix.LANDLOCK_ACCESS_FS_IOCTL_DEV); err != nil {
				return -1, 0, err
			}
		}
	}
	// /dev/null and friends: the runtime and os/exec open them.
	for _, path := range []string{"/dev/null", "/dev/urandom"} {
		if err := add(path, readRights|unix.LANDLOCK_ACCESS_FS_WRITE_FILE); err != nil {
			return -1, 0, err
		}
	}
	ok = true
	return int(fd), abi, nil
}
