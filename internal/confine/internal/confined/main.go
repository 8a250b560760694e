// Command confined is a helper-shaped test program for package confine:
// it listens on a socket, confines itself, then answers probe calls by
// trying things a confined helper must or must not be able to do. With
// --die it instead makes one of the calls that kill, and should not live
// to print anything after it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"sluice/internal/confine"
	"sluice/internal/pty"
	"sluice/rpc"
)

// Test hellos shared with confine_test.go.
var (
	Client = rpc.Hello{Intent: "sluice test confine client", BuildID: strings.Repeat("c1", 32)}
	Server = rpc.Hello{Intent: "sluice test confine server", BuildID: strings.Repeat("c2", 32)}
)

func main() {
	listen := flag.String("listen", "", "socket path")
	read := flag.String("read", "", "directory the profile may read")
	write := flag.String("write", "", "directory the profile may write")
	spawn := flag.Bool("exec", false, "profile allows starting programs")
	ptys := flag.Bool("pty", false, "profile allows opening new ptys")
	die := flag.String("die", "", "after confining, make this killing call: mount, ptrace, unshare, setuid, execve")
	exit := flag.String("exit", "", "exit at once \"before\" or \"after\" confining (to time Apply)")
	flag.Parse()

	var l interface{ Close() error }
	var srv *rpc.Server
	var ul = func() error { return nil }
	if *listen != "" {
		lis, err := rpc.Listen(*listen, 0o666)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		l = lis
		srv = &rpc.Server{Name: "confined", Routes: []rpc.Route{{
			Client: Client, Server: Server, Allow: rpc.Allow{UIDs: []uint32{0, uint32(os.Getuid())}},
			MaxFDs: 1, Handle: handle,
		}}, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
		ul = func() error { return srv.Serve(context.Background(), lis) }
	}
	startEarly()
	if *exit == "before" {
		os.Exit(0)
	}
	p := confine.Profile{Name: "confined", Exec: *spawn, Pty: *ptys}
	if *read != "" {
		p.Read = append(p.Read, *read)
	}
	if *write != "" {
		p.Write = append(p.Write, *write)
	}
	st, err := confine.Apply(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("confined:", st)
	if *exit == "after" {
		os.Exit(0)
	}
	if *die != "" {
		var err error
		switch *die {
		case "mount":
			err = unix.Mount("none", "/mnt", "tmpfs", 0, "")
		case "ptrace":
			_, _, e := unix.Syscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
			err = e
		case "unshare":
			err = unix.Unshare(unix.CLONE_NEWNS)
		case "setuid":
			_, _, e := unix.RawSyscall(unix.SYS_SETUID, 65534, 0, 0)
			err = e
		case "execve":
			err = unix.Exec("/bin/true", []string{"true"}, nil)
		}
		fmt.Println("survived:", *die, err)
		os.Exit(3)
	}
	defer l.Close()
	if err := ul(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// early are goroutines locked to threads of their own from before Apply,
// so the "early" probe can act on threads Apply had to reach from outside.
var early []chan earlyReq

const nEarly = 4

type earlyReq struct {
	path  string
	reply chan error
}

func startEarly() {
	var started sync.WaitGroup
	for range nEarly {
		ask := make(chan earlyReq)
		early = append(early, ask)
		started.Add(1)
		go func() {
			// Locked and never unlocked: this goroutine's thread is its
			// own from before confinement until the process ends, and
			// the open below is made on it.
			runtime.LockOSThread()
			started.Done()
			for r := range ask {
				fd, err := unix.Open(r.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
				}
				r.reply <- err
			}
		}()
	}
	started.Wait()
}

// readOnEarly has every early thread open path and returns their common
// result (nil when all succeeded), or an error when they differ.
func readOnEarly(path string) error {
	var errs []error
	for _, ask := range early {
		r := earlyReq{path: path, reply: make(chan error)}
		ask <- r
		errs = append(errs, <-r.reply)
	}
	for _, e := range errs[1:] {
		if e != errs[0] {
			return fmt.Errorf("early threads disagree: %v", errs)
		}
	}
	return errs[0]
}

// handle answers one probe: the request body is the probe name and an
// argument; the reply is "ok" or the error. "pipe" also returns an fd.
func handle(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	var req []string
	if err := c.Decode(&req); err != nil || len(req) != 2 {
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "want [probe, arg]")
	}
	c.Label = req[0]
	arg := req[1]
	var err error
	var fds []*os.File
	switch req[0] {
	case "read":
		_, err = os.ReadFile(arg)
	case "write":
		err = os.WriteFile(arg, []byte("x"), 0o600)
	case "remove":
		err = os.Remove(arg)
	case "mkdir":
		err = os.Mkdir(arg, 0o700)
	case "socket":
		dom := map[string]int{"unix": unix.AF_UNIX, "inet": unix.AF_INET, "inet6": unix.AF_INET6, "netlink": unix.AF_NETLINK}[arg]
		var fd int
		fd, err = unix.Socket(dom, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
	case "connect":
		var fd int
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: arg})
			unix.Close(fd)
		}
	case "spawn":
		err = exec.Command(arg).Run()
	case "threads":
		// New OS threads after confinement must work (and inherit it).
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				_, _ = unix.Gettid(), os.Getpid()
			}()
		}
		wg.Wait()
	case "early":
		// Threads that existed before Apply must be as confined as the
		// rest: each tries to read arg on its own thread.
		err = readOnEarly(arg)
	case "pty":
		// A new pty, slave included, and a terminal ioctl on each.
		var m, s *os.File
		if m, s, err = pty.Open(); err == nil {
			_, err = unix.IoctlGetWinsize(int(s.Fd()), unix.TIOCGWINSZ)
			m.Close()
			s.Close()
		}
	case "landlock":
		// The one landlock call the filter lets through, with flags
		// (refused), and the call that makes rulesets (refused).
		if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, ^uintptr(0), unix.LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF, 0); e != 0 {
			err = e
		}
		if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION); e != unix.EPERM {
			err = fmt.Errorf("landlock_create_ruleset: %v, %w", e, err)
		}
	case "prctl":
		err = unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	case "pipe":
		var r, w *os.File
		r, w, err = os.Pipe()
		if err == nil {
			w.Close()
			fds = []*os.File{r}
		}
	default:
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "unknown probe %q", req[0])
	}
	res := "ok"
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			res = unix.ErrnoName(errno)
		} else {
			res = err.Error()
		}
	}
	return rpc.Reply{Body: res, FDs: fds}, nil
}
