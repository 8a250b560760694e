package runner

import (
	"errors"
	"net"
	"syscall"
	"time"

	"sluice/runner/spawn"
)

// acceptLoop is Accept=yes: the runner accepts each connection and starts
// one process for it, the connection as fd 3, LISTEN_FDS=1, LISTEN_PID the
// process's own pid and LISTEN_FDNAMES the socket's name, exactly as
// systemd starts NAME@.service instances. At MaxConnections live
// instances it stops accepting, so further clients wait in the backlog
// rather than being turned away.
func (u *unit) acceptLoop() {
	r := u.r
	sem := make(chan struct{}, u.cfg.MaxConnections)
	env := append(u.env[:len(u.env):len(u.env)], "LISTEN_FDS=1", "LISTEN_FDNAMES="+u.cfg.Socket.FDName)
	cred := u.id.credential()
	umask := u.umask()
	var backoff time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-r.ctx.Done():
			return
		}
		c, err := u.listener.AcceptUnix()
		if err != nil {
			<-sem
			if r.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: wait and go on, never spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			r.log.Warn("runner: accept failed", "unit", u.cfg.Name, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-r.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		p, err := spawn.Start(&spawn.Attr{
			Path: u.path, Exec: u.exe, Args: u.argv, Env: env,
			Files: append(u.logFiles(), c),
			// A process group, not a session, unless the unit asks: see
			// spawn.Attr.Setsid and Unit.Setsid.
			ListenPID: true, Credential: cred, Setsid: u.cfg.Setsid, Setpgid: !u.cfg.Setsid, NoCtty: !u.cfg.Setsid, Umask: umask,
		})
		// The child has its own copy; ours must go so that the client
		// sees EOF when the child is done.
		c.Close()
		if err != nil {
			<-sem
			r.log.Error("runner: cannot start instance", "unit", u.cfg.Name, "path", u.path, "err", err)
			continue
		}
		u.instMu.Lock()
		u.instances[p] = struct{}{}
		u.instMu.Unlock()
		go func() {
			ws := p.Wait()
			u.instMu.Lock()
			delete(u.instances, p)
			u.instMu.Unlock()
			<-sem
			if !ws.Exited() || ws.ExitStatus() != 0 {
				if !(ws.Signaled() && ws.Signal() == syscall.SIGTERM && r.ctx.Err() != nil) {
					r.log.Warn("runner: instance failed", "unit", u.cfg.Name, "pid", p.Pid, "status", spawn.Describe(ws))
				}
			}
		}()
	}
}

// umask is UMask=, 0022 by default as in systemd.
func (u *unit) umask() int {
	if u.cfg.Umask != nil {
		return int(*u.cfg.Umask)
	}
	return 0o022
}
