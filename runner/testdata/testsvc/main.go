// Command testsvc is the runner tests' service: a small static binary that
// serves one rpc protocol on its activation fds (one call per process under
// Accept=yes, forever under Accept=no) and exercises the fd store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"sluice/rpc"
	"sluice/runner/internal/testwire"
	"sluice/sdnotify"
)

// The service's wire contract, shared with the service itself.
var (
	clientHello = testwire.ClientHello
	serverHello = testwire.ServerHello
)

type (
	request = testwire.Request
	info    = testwire.Info
)

var (
	listenEnv [3]string
	stored    = map[string]*os.File{}
	mu        sync.Mutex
	writers   = map[string]*os.File{}
	storedOrd []string
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exit" {
		os.Exit(0) // the benchmark's bare fork+exec+wait
	}
	if len(os.Args) > 1 && os.Args[1] == "echo" {
		fmt.Println(strings.Join(os.Args[2:], " "))
		return
	}
	crashUntil := flag.Int("crash-until", 0, "exit 1 at start while the counter file is below this")
	counter := flag.String("counter", "", "file counting starts")
	notify := flag.Bool("notify", false, "send READY=1 once serving")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM (the runner must SIGKILL)")
	quiet := flag.Bool("quiet", false, "log nothing per call")
	flag.Parse()

	listenEnv = [3]string{os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")}
	if *counter != "" {
		b, _ := os.ReadFile(*counter)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		n++
		os.WriteFile(*counter, []byte(strconv.Itoa(n)), 0o644)
		if n <= *crashUntil {
			fmt.Fprintf(os.Stderr, "testsvc: crashing on purpose, start %d\n", n)
			os.Exit(1)
		}
	}
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	files := rpc.ActivationFiles()
	st, socks := rpc.SplitFiles(files, "store.")
	// The TCP socket (a frontend's "http") is held, not served: only its
	// name and presence matter to the tests.
	httpFDs, socks := rpc.SplitFiles(socks, "http")
	defer func() { _ = httpFDs }()
	for _, f := range st {
		stored[f.Name()] = f
		storedOrd = append(storedOrd, f.Name())
	}
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if !*quiet {
		fmt.Printf("testsvc up pid=%d fds=%s\n", os.Getpid(), listenEnv[2])
	}
	s := &rpc.Server{Name: "testsvc", Log: log, Routes: []rpc.Route{{
		Client: clientHello, Server: serverHello, MaxFDs: 1,
		Allow:  rpc.Allow{UIDs: allowed()},
		Handle: handle,
	}}}
	stopSignals := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if *ignoreTerm {
		stopSignals = stopSignals[:1]
	}
	ctx, cancel := signal.NotifyContext(context.Background(), stopSignals...)
	defer cancel()
	if *notify {
		if err := sdnotify.Ready(); err != nil {
			fmt.Fprintln(os.Stderr, "testsvc: notify:", err)
		}
	}
	if err := rpc.ServeFiles(ctx, s, socks); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "testsvc:", err)
		os.Exit(1)
	}
}

func handle(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	var req request
	if err := c.Decode(&req); err != nil {
		return rpc.Reply{}, err
	}
	c.Label = req.Op
	mu.Lock()
	defer mu.Unlock()
	switch req.Op {
	case "ping":
		return rpc.Reply{Body: "pong"}, nil
	case "whoami":
		in := info{PID: os.Getpid(), ListenPID: listenEnv[0], ListenFDs: listenEnv[1], ListenFDNames: listenEnv[2],
			UID: os.Getuid(), GID: os.Getgid(), Env: os.Environ(), Stored: storedOrd}
		in.Groups, _ = os.Getgroups()
		if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
			for _, e := range ents {
				l, _ := os.Readlink("/proc/self/fd/" + e.Name())
				in.FDLinks = append(in.FDLinks, l)
			}
		}
		if d := os.Getenv("CREDENTIALS_DIRECTORY"); d != "" {
			b, err := os.ReadFile(d + "/grant.key")
			in.GrantKeyLen = len(b)
			if err != nil {
				in.GrantKeyErr = err.Error()
			}
		}
		return rpc.Reply{Body: in}, nil
	case "store":
		r, w, err := os.Pipe()
		if err != nil {
			return rpc.Reply{}, err
		}
		defer r.Close()
		if _, err := w.WriteString(req.Data); err != nil {
			return rpc.Reply{}, err
		}
		if err := sdnotify.Store(req.Name, req.Poll, r); err != nil {
			return rpc.Reply{}, err
		}
		writers[req.Name] = w
		return rpc.Reply{Body: info{}}, nil
	case "hup":
		w := writers[req.Name]
		if w == nil {
			return rpc.Reply{}, rpc.Errorf("not-found", "no writer %q", req.Name)
		}
		w.Close()
		delete(writers, req.Name)
		return rpc.Reply{Body: info{}}, nil
	case "remove":
		return rpc.Reply{Body: info{}}, sdnotify.Remove(req.Name)
	case "read":
		f := stored[req.Name]
		if f == nil {
			return rpc.Reply{}, rpc.Errorf("not-found", "nothing stored as %q", req.Name)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return rpc.Reply{}, err
		}
		return rpc.Reply{Body: info{Data: string(b)}}, nil
	case "notify":
		return rpc.Reply{Body: info{}}, sdnotify.Notify(req.Data)
	case "call":
		// whoami on another unit's socket (Name), as this unit: what a
		// helper calling the next one in the chain meets.
		cl := &rpc.Client{Path: req.Name, Hello: clientHello, Expect: serverHello}
		var in info
		if _, err := cl.Call(ctx, request{Op: "whoami"}, nil, &in); err != nil {
			return rpc.Reply{}, rpc.Errorf("failed", "%v", err)
		}
		return rpc.Reply{Body: in}, nil
	}
	return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "unknown op %q", req.Op)
}

// allowed is root, this process's uid, and every uid:N in the
// SLUICE_ALLOW_* variables a runner config gives the helpers.
func allowed() []uint32 {
	uids := []uint32{0, uint32(os.Getuid())}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "SLUICE_ALLOW_") {
			continue
		}
		for _, spec := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(spec, "uid:"); ok {
				if u, err := strconv.ParseUint(n, 10, 32); err == nil {
					uids = append(uids, uint32(u))
				}
			}
		}
	}
	return uids
}
