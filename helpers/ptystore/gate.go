package ptystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sluice/rpc"
)

// busyLine is what rpc.Server writes to a connection it has no slot for
// (rpc's own constant, unexported): rpc.Client reports it as rpc.ErrBusy.
const busyLine = "sluice busy\n"

// Gate serves Server on listeners as rpc.Server.Serve does, except that
// the connection slots are two pools, chosen by the connecting process's
// credentials (SO_PEERCRED, SO_PEERGROUPS: the kernel's, at connect):
// peers Reserved admits (policy, putting a session it just opened) have
// Reserve slots of their own, everyone else Max. Without it the frontend,
// which may connect, could hold every slot of one shared pool, and
// policy's pty-put would find ptystore busy: the create fails and policy,
// which may not signal the shell, can only close its fd, a hangup that a
// process ignoring SIGHUP or one that left the session outlives, where no
// end or revocation reaches it (tests/e2e TestCreateWhilePtyStoreFull).
// Which pool a connection took decides nothing else: each call is still
// checked by its route's Allow against the credentials of its message.
type Gate struct {
	Server   *rpc.Server
	Reserved rpc.Allow
	Max      int // slots for the other peers; 0: Server.MaxConns, else 64
	Reserve  int // slots for Reserved peers; 0: 64
	Log      *slog.Logger
}

// Serve serves l until ctx ends.
func (g *Gate) Serve(ctx context.Context, l *net.UnixListener) error {
	max, reserve := g.Max, g.Reserve
	if max <= 0 {
		max = g.Server.MaxConns
	}
	if max <= 0 {
		max = 64
	}
	if reserve <= 0 {
		reserve = 64
	}
	log := g.Log
	if log == nil {
		log = slog.Default()
	}
	if err := passCred(l); err != nil {
		return err
	}
	pools := [2]chan struct{}{make(chan struct{}, max), make(chan struct{}, reserve)}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			backoff = min(max2(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("ptystore: accept failed, backing off", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		pool := pools[0]
		if g.reserved(c) {
			pool = pools[1]
		}
		select {
		case pool <- struct{}{}:
		default:
			c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			c.Write([]byte(busyLine))
			c.Close()
			log.Warn("rpc: busy, refused a connection", "server", g.Server.Name, "pool", cap(pool), "reserved", pool == pools[1])
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-pool }()
			g.Server.ServeConn(ctx, c)
		}()
	}
}

func max2(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// reserved reports whether the process that connected c is one Reserved
// admits; any doubt (no credentials) is the shared pool.
func (g *Gate) reserved(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		uc, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return
		}
		if slices.Contains(g.Reserved.UIDs, uc.Uid) || slices.Contains(g.Reserved.GIDs, uc.Gid) {
			ok = true
			return
		}
		if len(g.Reserved.GIDs) == 0 {
			return
		}
		groups, err := peerGroups(int(fd))
		if err != nil {
			return
		}
		for _, gid := range groups {
			if slices.Contains(g.Reserved.GIDs, gid) {
				ok = true
				return
			}
		}
	})
	return ok
}

// passCred sets SO_PASSCRED on l, as rpc.Server.Serve does, so that every
// message arrives with its sender's credentials.
func passCred(l *net.UnixListener) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return fmt.Errorf("ptystore: listener: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return fmt.Errorf("ptystore: listener: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("ptystore: SO_PASSCRED: %w", serr)
	}
	return nil
}

// ServeFiles is rpc.ServeFiles through g: every listening socket among
// files is served until ctx ends.
func (g *Gate) ServeFiles(ctx context.Context, files []*os.File) error {
	if len(files) == 0 {
		return errors.New("ptystore: no sockets passed (LISTEN_FDS unset); use --listen PATH")
	}
	var ls []*net.UnixListener
	for _, f := range files {
		fl, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("ptystore: activation fd %s: %w", f.Name(), err)
		}
		ul, ok := fl.(*net.UnixListener)
		if !ok {
			fl.Close()
			return fmt.Errorf("ptystore: activation fd %s is not a unix socket", f.Name())
		}
		// systemd owns the path; closing ours must not unlink it.
		ul.SetUnlinkOnClose(false)
		ls = append(ls, ul)
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- g.Serve(ctx, l) }()
	}
	var first error
	for range ls {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}
