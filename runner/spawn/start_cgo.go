//go:build cgo

package spawn

/*
#define _GNU_SOURCE
#include <stdlib.h>
#include <stddef.h>
#include <sys/types.h>

enum {
	SLUICE_STEP_CLONE = 1,
	SLUICE_STEP_SETSID,
	SLUICE_STEP_SETGROUPS,
	SLUICE_STEP_SETGID,
	SLUICE_STEP_SETUID,
	SLUICE_STEP_DUP,
	SLUICE_STEP_CHDIR,
	SLUICE_STEP_EXEC,
};

struct sluice_spawn {
	const char *path;
	int exec_fd; // >= 0: execveat(exec_fd, "", AT_EMPTY_PATH) instead of path
	char *const *argv;
	char *const *envp;
	char *pid_slot; // where the child writes its pid in decimal, or NULL
	const int *fds; // fds[i] becomes fd i; every fds[i] >= nfds
	int nfds;
	int maxfd; // RLIMIT_NOFILE, for the close-on-exec fallback
	int setsid;
	int setpgid;
	int notty; // drop the controlling terminal without a new session
	int set_creds;
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	int ngroups;
	const char *dir; // or NULL
	int umask;       // or -1
	// Written by the child when a step fails, before it exits 127; read by
	// the parent once clone returns (CLONE_VFORK: the child has exec'd or
	// exited by then).
	int err;
	int step;
};


// The child side of spawn: see spawn.go for why this is C.
//
// Rules for everything below that runs in the child: it shares the parent's
// memory (CLONE_VM) and runs on its own small stack while the parent thread
// is suspended (CLONE_VFORK). So it makes raw system calls only: no malloc,
// no stdio, no locks, no glibc wrappers that keep per-process state
// (glibc's setuid() would broadcast to the parent's threads). The only
// memory it writes is struct sluice_spawn's err/step fields, its own stack,
// and the pid slot of the environment block, all owned by this one spawn.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif


// Kernel sigsets are 64 bits on every Linux architecture Go supports.
#define KSIGSET_SIZE 8

static void fail(struct sluice_spawn *a, int step) {
	a->err = errno;
	a->step = step;
	syscall(SYS_exit_group, 127);
	for (;;) {
	}
}

static int child(void *p) {
	struct sluice_spawn *a = p;

	// 1. Every signal back to SIG_DFL, as systemd does for services. Go's
	// handlers must never run here: they would act on the parent's memory
	// from a thread Go does not know. Signals stay blocked (the parent
	// blocked all of them before clone) until this is done. A zeroed kernel
	// struct sigaction is SIG_DFL with no flags and an empty mask on every
	// architecture; 64 bytes covers the largest layout.
	unsigned long ksa[8] = {0};
	for (int sig = 1; sig <= 64; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP) {
			continue;
		}
		syscall(SYS_rt_sigaction, sig, ksa, NULL, KSIGSET_SIZE);
	}

	// 2. A session of its own, so a terminal's or the runner's process
	// group signals do not reach it by accident (systemd does the same).
	if (a->setsid && syscall(SYS_setsid) < 0) {
		fail(a, SLUICE_STEP_SETSID);
	}
	if (a->setpgid && syscall(SYS_setpgid, 0, 0) < 0) {
		fail(a, SLUICE_STEP_SETSID);
	}
	// A process group in the runner's session still has the runner's
	// controlling terminal, if it has one: it could open /dev/tty and,
	// where TIOCSTI is allowed, type into the shell that started the
	// runner. TIOCNOTTY from a process that leads no session detaches that
	// process alone, and a non-leader can never take a terminal again.
	// ENXIO: there was none.
	if (a->notty) {
		int tty = syscall(SYS_openat, AT_FDCWD, "/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (tty >= 0) {
			long r = syscall(SYS_ioctl, tty, TIOCNOTTY, 0);
			syscall(SYS_close, tty);
			if (r < 0) {
				fail(a, SLUICE_STEP_SETSID);
			}
		}
	}

	// 3. Identity: groups first, while we still may.
	if (a->set_creds) {
		if (syscall(SYS_setgroups, a->ngroups, a->groups) < 0) {
			fail(a, SLUICE_STEP_SETGROUPS);
		}
		if (syscall(SYS_setresgid, a->gid, a->gid, a->gid) < 0) {
			fail(a, SLUICE_STEP_SETGID);
		}
		if (syscall(SYS_setresuid, a->uid, a->uid, a->uid) < 0) {
			fail(a, SLUICE_STEP_SETUID);
		}
	}

	// 4. The fds: fds[i] becomes fd i. The parent made every source a
	// close-on-exec duplicate numbered >= nfds, so no dup3 here can clobber
	// a source still to be moved, and dup3 onto a new number leaves the
	// target without close-on-exec. Everything else Go opened is
	// close-on-exec and goes away at execve.
	for (int i = 0; i < a->nfds; i++) {
		if (syscall(SYS_dup3, a->fds[i], i, 0) < 0) {
			fail(a, SLUICE_STEP_DUP);
		}
	}

	// Every other fd goes at exec, whatever this process inherited without
	// close-on-exec (a runner started with 9</some/file): a unit gets fds
	// 0..nfds-1 and nothing else, as from systemd. Kernels before 5.11
	// lack the flag; then each fd is marked one by one.
	if (syscall(SYS_close_range, a->nfds, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		for (int fd = a->nfds; fd < a->maxfd; fd++) {
			syscall(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
		}
	}

	if (a->umask >= 0) {
		syscall(SYS_umask, a->umask);
	}
	if (a->dir != NULL && syscall(SYS_chdir, a->dir) < 0) {
		fail(a, SLUICE_STEP_CHDIR);
	}

	// 5. LISTEN_PID must name the process that will read it, which is only
	// known now. The slot is this spawn's own, sized for any pid.
	if (a->pid_slot != NULL) {
		long pid = syscall(SYS_getpid);
		char digits[24];
		int n = 0;
		do {
			digits[n++] = '0' + (char)(pid % 10);
			pid /= 10;
		} while (pid > 0 && n < (int)sizeof digits);
		for (int i = 0; i < n; i++) {
			a->pid_slot[i] = digits[n - 1 - i];
		}
		a->pid_slot[n] = '\0';
	}

	// 6. Unblock everything: the mask survives execve, and a service must
	// start with none blocked. Handlers are all default by now, so a signal
	// arriving here acts on this child alone.
	uint64_t none = 0;
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, KSIGSET_SIZE);

	// 7. By fd when the caller opened the file: the kernel checks only the
	// file's own execute bit against the new uid, not the path to it, and
	// runs exactly the inode that was opened and checked.
	if (a->exec_fd >= 0) {
		syscall(SYS_execveat, a->exec_fd, "", a->argv, a->envp, AT_EMPTY_PATH);
	} else {
		syscall(SYS_execve, a->path, a->argv, a->envp);
	}
	fail(a, SLUICE_STEP_EXEC);
	return 127;
}

int sluice_spawn(struct sluice_spawn *a, void *stack, size_t stack_size) {
	uint64_t all = ~(uint64_t)0, old = 0;
	a->err = 0;
	a->step = 0;
	// Block every signal in this thread so none is delivered between clone
	// and the child's own reset (raw call: glibc's wrapper would leave its
	// two internal signals open).
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, KSIGSET_SIZE);
	// The stack grows down on every architecture Go supports on Linux;
	// keep it 16-byte aligned.
	char *top = (char *)(((uintptr_t)stack + stack_size) & ~(uintptr_t)15);
	int pid = clone(child, top, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
	int cerr = errno;
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, KSIGSET_SIZE);
	if (pid < 0) {
		a->err = cerr;
		a->step = SLUICE_STEP_CLONE;
	}
	return pid;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var steps = map[C.int]string{
	C.SLUICE_STEP_CLONE: "clone", C.SLUICE_STEP_SETSID: "setsid/setpgid",
	C.SLUICE_STEP_SETGROUPS: "setgroups", C.SLUICE_STEP_SETGID: "setresgid",
	C.SLUICE_STEP_SETUID: "setresuid", C.SLUICE_STEP_DUP: "dup3",
	C.SLUICE_STEP_CHDIR: "chdir", C.SLUICE_STEP_EXEC: "execve",
}

// The child runs only raw system calls and a short loop; 64 KiB is ample.
const stackSize = 64 << 10

// pidDigits leaves room for any pid (pid_max is at most 2^22, but the slot
// costs nothing).
const pidDigits = 20

var devNull struct {
	once sync.Once
	f    *os.File
	err  error
}

func nullFile() (*os.File, error) {
	devNull.once.Do(func() { devNull.f, devNull.err = os.OpenFile(os.DevNull, os.O_RDWR, 0) })
	return devNull.f, devNull.err
}

// Start starts a process. If the child fails before execve (exec format,
// missing file, setuid refused), Start reaps it and returns an *ExitError.
func Start(a *Attr) (*Process, error) {
	if a.Path == "" && a.Exec == nil || len(a.Args) == 0 {
		return nil, errors.New("spawn: no path or argv")
	}
	startReaper()

	// Sources of the child's fds: close-on-exec duplicates numbered at or
	// above the child's highest fd, so the child's dup3 loop can place them
	// in any order. F_DUPFD_CLOEXEC is atomic, so no fork can leak them.
	files := a.Files
	for len(files) < 3 {
		files = append(files, nil)
	}
	nfds := len(files)
	dups := make([]int, 0, nfds)
	defer func() {
		for _, fd := range dups {
			unix.Close(fd)
		}
	}()
	for i, f := range files {
		if of, ok := f.(*os.File); f == nil || ok && of == nil {
			nf, err := nullFile()
			if err != nil {
				return nil, fmt.Errorf("spawn: %w", err)
			}
			f = nf
		}
		fd, err := dupAbove(f, nfds)
		if err != nil {
			return nil, fmt.Errorf("spawn: fd %d (%T): %w", i, f, err)
		}
		dups = append(dups, fd)
	}
	// The exec fd too sits above the child's fds, or a dup3 could replace it.
	execFD := -1
	if a.Exec != nil {
		fd, err := dupAbove(a.Exec, nfds)
		if err != nil {
			return nil, fmt.Errorf("spawn: exec fd: %w", err)
		}
		defer unix.Close(fd)
		execFD = fd
	}

	// Everything the child reads lives in C memory: it must not move, and
	// cgo forbids handing C pointers into Go memory that holds pointers.
	env := a.Env
	if a.ListenPID {
		env = append(env[:len(env):len(env)], "LISTEN_PID="+strings.Repeat("0", pidDigits))
	}
	var groups []uint32
	if a.Credential != nil {
		groups = a.Credential.Groups
	}
	size := 8*(len(a.Args)+1+len(env)+1) + 4*nfds + 4*len(groups) + len(a.Path) + 1 + len(a.Dir) + 1
	for _, s := range a.Args {
		size += len(s) + 1
	}
	for _, s := range env {
		size += len(s) + 1
	}
	block := C.malloc(C.size_t(size))
	if block == nil {
		return nil, errors.New("spawn: out of memory")
	}
	defer C.free(block)
	mem := unsafe.Slice((*byte)(block), size)
	off := 0
	take := func(n int) unsafe.Pointer {
		p := unsafe.Pointer(&mem[off])
		off += n
		return p
	}
	argv := unsafe.Slice((**C.char)(take(8*(len(a.Args)+1))), len(a.Args)+1)
	envp := unsafe.Slice((**C.char)(take(8*(len(env)+1))), len(env)+1)
	var cfds *C.int
	if nfds > 0 {
		cfds = (*C.int)(take(4 * nfds))
		for i, fd := range dups {
			unsafe.Slice(cfds, nfds)[i] = C.int(fd)
		}
	}
	var cgroups *C.gid_t
	if len(groups) > 0 {
		cgroups = (*C.gid_t)(take(4 * len(groups)))
		for i, g := range groups {
			unsafe.Slice(cgroups, len(groups))[i] = C.gid_t(g)
		}
	}
	str := func(s string) *C.char {
		p := take(len(s) + 1)
		copy(unsafe.Slice((*byte)(p), len(s)+1), s)
		*(*byte)(unsafe.Add(p, len(s))) = 0
		return (*C.char)(p)
	}
	cs := C.struct_sluice_spawn{
		path:    str(a.Path),
		exec_fd: C.int(execFD),
		argv:    &argv[0],
		envp:    &envp[0],
		fds:     cfds,
		nfds:    C.int(nfds),
		groups:  cgroups, ngroups: C.int(len(groups)),
		umask: C.int(a.Umask),
	}
	for i, s := range a.Args {
		argv[i] = str(s)
	}
	argv[len(a.Args)] = nil
	for i, s := range env {
		envp[i] = str(s)
	}
	envp[len(env)] = nil
	if a.ListenPID {
		last := envp[len(env)-1]
		cs.pid_slot = (*C.char)(unsafe.Add(unsafe.Pointer(last), len("LISTEN_PID=")))
	}
	if a.Dir != "" {
		cs.dir = str(a.Dir)
	}
	if a.Setsid {
		cs.setsid = 1
	} else if a.Setpgid {
		cs.setpgid = 1
	}
	if !a.Setsid && a.NoCtty {
		cs.notty = 1
	}
	var rl unix.Rlimit
	cs.maxfd = 1024
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<20 {
		cs.maxfd = C.int(rl.Cur)
	}
	if c := a.Credential; c != nil {
		cs.set_creds = 1
		cs.uid = C.uid_t(c.Uid)
		cs.gid = C.gid_t(c.Gid)
	}
	stack := C.malloc(stackSize)
	if stack == nil {
		return nil, errors.New("spawn: out of memory")
	}
	defer C.free(stack)

	// ForkLock: no fd created without close-on-exec elsewhere in the
	// process (syscall.ForkLock's RLock holders) can slip into the child.
	// The reap lock: the child cannot be reaped before it is registered.
	syscall.ForkLock.Lock()
	reapMu.RLock()
	pid := int(C.sluice_spawn(&cs, stack, stackSize))
	var p *Process
	if pid > 0 {
		p = &Process{Pid: pid, done: make(chan struct{})}
		procsMu.Lock()
		procs[pid] = p
		procsMu.Unlock()
	}
	reapMu.RUnlock()
	syscall.ForkLock.Unlock()

	if cs.step != 0 {
		err := &ExitError{Step: steps[cs.step], Err: syscall.Errno(cs.err)}
		if p != nil {
			p.Wait()
		}
		return nil, err
	}
	return p, nil
}

func dupAbove(f syscall.Conn, min int) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	// Control, not Fd(): Fd() would switch a socket the runner still polls
	// to blocking mode.
	err = rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, min) })
	if err == nil {
		err = derr
	}
	return nfd, err
}
