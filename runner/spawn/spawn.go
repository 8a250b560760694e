// Package spawn starts processes the way a service manager must: with
// activation fds at 3.., LISTEN_PID naming the child itself, signals reset,
// a new session and optionally another uid/gid; and it reaps every child of
// the process, including orphans it inherits as a child subreaper.
//
// Why not os/exec: LISTEN_PID must be the child's own pid, known only after
// fork, but os/exec fixes the environment before it. Exec'ing through a
// shim that fills it in costs a second execve per connection, which is as
// much again as the helper's own start. So the fork is done here, in C
// (spawn_linux.c): clone(CLONE_VM|CLONE_VFORK) onto a private stack, all
// signals blocked around it, and a child that resets handlers, moves fds,
// switches identity, writes its pid into the environment block prepared for
// it, unblocks signals and execs, using raw system calls only.
//
// A process that uses spawn hands all child reaping to it: its reaper
// waits for any child (wait4(-1)), so children started by os/exec in the
// same process would lose their exit status to it.
package spawn

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Attr describes one process to start.
type Attr struct {
	Path string // absolute path of the executable, if Exec is nil
	// Exec, when set, is the executable itself (opened O_PATH is enough):
	// the child runs it with execveat(AT_EMPTY_PATH), so the new uid needs
	// execute permission on the file only, not search permission on every
	// directory above it, and nobody can swap the file between the
	// caller's checks and the exec.
	Exec *os.File
	Args []string // argv, including argv[0]
	Env  []string // KEY=VALUE; LISTEN_PID is added by ListenPID
	// Files become the child's fds 0, 1, 2, 3...: *os.File, *net.UnixConn
	// or anything else with a SyscallConn; a nil entry is /dev/null. Fewer
	// than three: the missing standard fds are /dev/null too.
	Files []syscall.Conn
	// ListenPID appends LISTEN_PID=<the child's own pid> to Env.
	ListenPID bool
	// Credential, when set, is the uid, gid and supplementary groups to
	// switch to (NoSetGroups is ignored: groups are always set).
	Credential *syscall.Credential
	// Setsid starts a new session: no controlling terminal, and no signal
	// meant for the runner's terminal or process group. It also starts a
	// new scheduler autogroup (CONFIG_SCHED_AUTOGROUP, outside cgroups),
	// which costs milliseconds at exit on a loaded machine; Setpgid (a new
	// process group in the runner's session) keeps the signal isolation
	// without that, for short-lived processes.
	Setsid  bool
	Setpgid bool
	// NoCtty, without Setsid, detaches the child from the controlling
	// terminal it would share with us (TIOCNOTTY): no new session, so no
	// autogroup, and still no terminal it could read, write or type into.
	NoCtty bool
	Dir    string // working directory; "" keeps ours
	Umask  int    // -1 keeps ours
}

// Process is a started child.
type Process struct {
	Pid    int
	done   chan struct{}
	status unix.WaitStatus
}

// Done is closed once the process has been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until the process is reaped and returns its status.
func (p *Process) Wait() unix.WaitStatus {
	<-p.done
	return p.status
}

// Signal sends sig unless the process has been reaped: holding the reap
// lock means the pid cannot be reaped, and so not reused, under us.
func (p *Process) Signal(sig syscall.Signal) error {
	reapMu.RLock()
	defer reapMu.RUnlock()
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return unix.Kill(p.Pid, sig)
}

// ExitError is a spawn that failed in the child before or at execve.
type ExitError struct {
	Step string
	Err  error
}

func (e *ExitError) Error() string { return "spawn: " + e.Step + ": " + e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// --- reaping ------------------------------------------------------------

var (
	reapOnce sync.Once
	// reapMu: spawns and signals hold it shared, the reaper exclusively.
	reapMu  sync.RWMutex
	procsMu sync.Mutex
	procs   = map[int]*Process{}
	orphans atomic.Uint64
)

// OrphansReaped counts children reaped that spawn did not start: processes
// reparented to us as a child subreaper.
func OrphansReaped() uint64 { return orphans.Load() }

// SetSubreaper makes this process the reaper of its orphaned descendants
// (PR_SET_CHILD_SUBREAPER), so a shell left behind by a one-shot helper is
// reaped here, not by pid 1, and stays inside the runner's process tree.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("spawn: PR_SET_CHILD_SUBREAPER: %w", err)
	}
	startReaper()
	return nil
}

func startReaper() {
	reapOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		go func() {
			for {
				reap()
				<-ch
			}
		}()
	})
}

func reap() {
	reapMu.Lock()
	defer reapMu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		procsMu.Lock()
		p := procs[pid]
		delete(procs, pid)
		procsMu.Unlock()
		if p == nil {
			orphans.Add(1)
			continue
		}
		p.status = ws
		close(p.done)
	}
}

// Describe renders a wait status for logs: "exit 3", "signal killed".
func Describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}
