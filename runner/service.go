package runner

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/runner/spawn"
	"sluice/sdnotify"
)

// service runs an Accept=no unit: one process at a time, handed the
// unit's listening sockets and its fd store, restarted with exponential
// back-off when it fails, and talking to the runner over NOTIFY_SOCKET.
type service struct {
	u      *unit
	store  *fdStore // nil when fdstore_max is 0
	notify *net.UnixConn

	mu       sync.Mutex
	main     *spawn.Process
	starts   int
	stopping bool
	stopCh   chan struct{}

	ready     chan struct{} // closed on the first READY=1
	readyOnce sync.Once
	wg        sync.WaitGroup
}

func newService(u *unit) (*service, error) {
	s := &service{u: u, stopCh: make(chan struct{}), ready: make(chan struct{})}
	if u.cfg.FDStoreMax > 0 {
		st, err := newFDStore(u.cfg.Name, u.cfg.FDStoreMax, u.r.log)
		if err != nil {
			return nil, err
		}
		s.store = st
	}
	path := u.r.notifyPath(u.cfg.Name)
	os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("runner: unit %s: notify socket: %w", u.cfg.Name, err)
	}
	s.notify = c
	// Who sent a notification is what the kernel says, never the message.
	rc, _ := c.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if serr == nil {
		serr = os.Chmod(path, 0o600)
	}
	if serr == nil && u.id.switchTo {
		serr = os.Lchown(path, int(u.id.uid), int(u.id.gid))
	}
	if serr != nil {
		s.close()
		return nil, fmt.Errorf("runner: unit %s: notify socket: %w", u.cfg.Name, serr)
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.readNotify() }()
	return s, nil
}

func (s *service) run() {
	u, log := s.u, s.u.r.log.With("unit", s.u.cfg.Name)
	delay := time.Duration(u.cfg.RestartSec)
	maxDelay := time.Duration(u.cfg.RestartMaxSec)
	for {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		p, err := s.startLocked()
		s.mu.Unlock()
		if err != nil {
			log.Error("runner: cannot start", "path", u.path, "err", err)
		} else {
			log.Info("runner: started", "pid", p.Pid)
			started := time.Now()
			ws := p.Wait()
			s.mu.Lock()
			s.main = nil
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				log.Info("runner: stopped", "pid", p.Pid, "status", spawn.Describe(ws))
				return
			}
			if ws.Exited() && ws.ExitStatus() == 0 {
				// Restart=on-failure: a clean exit is the service's choice.
				log.Info("runner: exited cleanly, not restarting", "pid", p.Pid)
				return
			}
			// A run that lasted the longest delay resets the back-off.
			if time.Since(started) >= maxDelay {
				delay = time.Duration(u.cfg.RestartSec)
			}
			log.Warn("runner: failed", "pid", p.Pid, "status", spawn.Describe(ws), "restart_in", delay)
		}
		select {
		case <-time.After(delay):
		case <-s.stopCh:
			return
		}
		delay = nextDelay(delay, maxDelay)
	}
}

// nextDelay doubles the restart delay up to max.
func nextDelay(d, max time.Duration) time.Duration {
	if d *= 2; d > max {
		return max
	}
	return d
}

// startLocked starts the main process: sockets first, then the stored
// fds, all named in LISTEN_FDNAMES, as systemd passes them.
func (s *service) startLocked() (*spawn.Process, error) {
	u := s.u
	files := u.logFiles()
	var names []string
	if u.sockFile != nil {
		files = append(files, u.sockFile)
		names = append(names, u.cfg.Socket.FDName)
	}
	if u.tcpFile != nil {
		files = append(files, u.tcpFile)
		names = append(names, HTTPFDName)
	}
	if s.store != nil {
		fds, stored, err := s.store.files()
		if err != nil {
			return nil, err
		}
		defer closeRaw(fds)
		for _, fd := range fds {
			files = append(files, fd)
		}
		names = append(names, stored...)
	}
	env := append(u.env[:len(u.env):len(u.env)], "NOTIFY_SOCKET="+u.r.notifyPath(u.cfg.Name))
	if len(names) > 0 {
		env = append(env, fmt.Sprintf("LISTEN_FDS=%d", len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	p, err := spawn.Start(&spawn.Attr{
		Path: u.path, Exec: u.exe, Args: u.argv, Env: env, Files: files,
		ListenPID: len(names) > 0, Credential: u.id.credential(), Setsid: true, Umask: u.umask(),
	})
	if err != nil {
		return nil, err
	}
	s.main = p
	s.starts++
	return p, nil
}

func (s *service) mainPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.main == nil {
		return 0
	}
	return s.main.Pid
}

func (s *service) startCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// stop keeps the service from starting again and returns the running
// process, if any, for the caller to terminate.
func (s *service) stop() *spawn.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopping {
		s.stopping = true
		close(s.stopCh)
	}
	return s.main
}

func (s *service) close() {
	if s.notify != nil {
		s.notify.Close()
		s.wg.Wait()
		os.Remove(s.u.r.notifyPath(s.u.cfg.Name))
	}
	if s.store != nil {
		s.store.close()
	}
}

// readNotify serves NOTIFY_SOCKET with NotifyAccess=main: only datagrams
// the kernel says come from the current main process count.
func (s *service) readNotify() {
	log := s.u.r.log.With("unit", s.u.cfg.Name)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*sdnotify.MaxFDs))
	for {
		n, oobn, flags, _, err := s.notify.ReadMsgUnix(buf, oob)
		if err != nil {
			return // closed at stop
		}
		var fds []int
		pid := int32(-1)
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for i := range msgs {
				switch msgs[i].Header.Type {
				case unix.SCM_RIGHTS:
					if f, err := unix.ParseUnixRights(&msgs[i]); err == nil {
						fds = append(fds, f...)
					}
				case unix.SCM_CREDENTIALS:
					if c, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
						pid = c.Pid
					}
				}
			}
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			log.Warn("runner: notification truncated, ignored", "pid", pid)
			closeInts(fds)
			continue
		}
		if main := s.mainPID(); pid <= 0 || int(pid) != main {
			log.Warn("runner: notification from a process that is not the main one, ignored", "pid", pid, "main", main)
			closeInts(fds)
			continue
		}
		s.handle(log, string(buf[:n]), fds)
	}
}

func (s *service) handle(log interface {
	Info(string, ...any)
	Warn(string, ...any)
}, msg string, fds []int) {
	tags := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			tags[k] = v
		}
	}
	if tags["READY"] == "1" {
		s.readyOnce.Do(func() { close(s.ready) })
		log.Info("runner: ready")
	}
	if tags["STOPPING"] == "1" {
		log.Info("runner: stopping, says the service")
	}
	if st, ok := tags["STATUS"]; ok {
		log.Info("runner: status", "status", st)
	}
	name, hasName := tags["FDNAME"]
	if hasName && sdnotify.ValidName(name) != nil {
		log.Warn("runner: invalid FDNAME, ignored", "fdname", name)
		name, hasName = "", false
	}
	if tags["FDSTOREREMOVE"] == "1" {
		if !hasName {
			log.Warn("runner: FDSTOREREMOVE=1 without a valid FDNAME, ignored")
		} else if s.store != nil {
			n := s.store.remove(name)
			log.Info("runner: fd store: removed", "fdname", name, "count", n)
		}
	}
	if tags["FDSTORE"] == "1" && len(fds) > 0 {
		if s.store == nil {
			log.Warn("runner: fds sent to the store, but fdstore_max is 0: closed", "count", len(fds))
			closeInts(fds)
			return
		}
		if !hasName {
			name = "stored" // systemd's default name
		}
		poll := tags["FDPOLL"] != "0"
		for i, fd := range fds {
			if err := s.store.add(name, fd, poll); err != nil {
				log.Warn("runner: fd store: not stored", "fdname", name, "err", err)
				closeInts(fds[i+1:])
				return
			}
		}
		return
	}
	// Fds not meant for the store are not kept.
	closeInts(fds)
}

func closeInts(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}
