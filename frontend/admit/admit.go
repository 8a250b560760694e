// Package admit decides which TCP connections the frontend takes before
// anyone has signed in on them, the way sshd's MaxStartups does: a cap on
// all connections, a cap on the ones not signed in yet, in total and per
// source address, and a sign-in rate per source. A connection beyond a cap
// is answered with an HTTP 503 at once and closed, so its fd is back
// before the next accept; the kernel's fd limit (raised above the caps by
// FitNoFile) is never what refuses.
package admit

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits are the caps; zero fields take the defaults below, a negative
// per-source cap turns it off (behind a reverse proxy every connection
// comes from the proxy).
type Limits struct {
	MaxConns           int // every open connection; default 4096
	MaxUnauth          int // connections not signed in; default 1024
	MaxUnauthPerSource int // of those, from one address; default 64
}

// Defaults, sized for one host's users: a browser opens a handful of
// connections to load the page and one WebSocket, so 64 per address lets
// a dozen people behind one NAT sign in at once.
const (
	DefaultMaxConns           = 4096
	DefaultMaxUnauth          = 1024
	DefaultMaxUnauthPerSource = 64
)

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxUnauth <= 0 {
		l.MaxUnauth = DefaultMaxUnauth
	}
	l.MaxUnauth = min(l.MaxUnauth, l.MaxConns)
	if l.MaxUnauthPerSource == 0 {
		l.MaxUnauthPerSource = DefaultMaxUnauthPerSource
	}
	return l
}

// FdsPerConn is what one connection may hold at most besides its socket:
// the pty of the session it streams and that session's two epoll
// instances (frontend/hub). Reserved covers the listener, the helpers'
// sockets during calls and the runtime's own.
const (
	FdsPerConn = 4
	Reserved   = 256
)

// FitNoFile raises RLIMIT_NOFILE's soft limit to its hard one and lowers
// MaxConns (and MaxUnauth with it) until every connection's fds fit under
// it, so that the caps refuse before accept4 fails with EMFILE. It
// returns the limits to use and the soft limit now in force.
func FitNoFile(l Limits, log *slog.Logger) (Limits, uint64) {
	l = l.withDefaults()
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		log.Warn("RLIMIT_NOFILE unknown; caps unchecked", "err", err)
		return l, 0
	}
	if r.Cur < r.Max {
		cur := r.Cur
		r.Cur = r.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
			log.Warn("could not raise RLIMIT_NOFILE", "from", cur, "to", r.Max, "err", err)
			r.Cur = cur
		}
	}
	if fit := (int64(r.Cur) - Reserved) / FdsPerConn; fit < int64(l.MaxConns) {
		fit = max(fit, 1)
		log.Warn("connection cap lowered to fit the fd limit (raise LimitNOFILE=)", "max_conns", l.MaxConns, "now", fit, "nofile", r.Cur)
		l.MaxConns = int(fit)
		l.MaxUnauth = min(l.MaxUnauth, l.MaxConns)
	}
	return l, r.Cur
}

// Gate counts connections and admits them.
type Gate struct {
	lim Limits
	log *slog.Logger

	mu        sync.Mutex
	total     int
	unauth    int
	perSource map[string]int
	refused   [3]int64 // by reason, since the last log line
	loggedAt  time.Time
}

func NewGate(l Limits, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.Default()
	}
	return &Gate{lim: l.withDefaults(), log: log, perSource: map[string]int{}}
}

// Limits are the caps in force.
func (g *Gate) Limits() Limits { return g.lim }

// Stats is a snapshot of the counts.
type Stats struct {
	Total, Unauth int
}

func (g *Gate) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Stats{g.total, g.unauth}
}

const (
	refusedAll = iota
	refusedUnauth
	refusedSource
)

var refusals = [...]string{
	refusedAll:    "the server has too many connections; try again shortly",
	refusedUnauth: "too many connections are waiting to sign in; try again shortly",
	refusedSource: "too many connections from your address are waiting to sign in; close some tabs or try again shortly",
}

// admit counts a new connection from ip, or says why not (-1: admitted).
func (g *Gate) admit(ip string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	why := -1
	switch {
	case g.total >= g.lim.MaxConns:
		why = refusedAll
	case g.unauth >= g.lim.MaxUnauth:
		why = refusedUnauth
	case g.lim.MaxUnauthPerSource > 0 && g.perSource[ip] >= g.lim.MaxUnauthPerSource:
		why = refusedSource
	}
	if why < 0 {
		g.total++
		g.unauth++
		g.perSource[ip]++
		return why
	}
	g.refused[why]++
	// A flood must not become a flood of log lines: one line per ten
	// seconds with the counts.
	if now := time.Now(); now.Sub(g.loggedAt) >= 10*time.Second {
		g.log.Warn("connections refused", "all_cap", g.refused[refusedAll], "unauth_cap", g.refused[refusedUnauth],
			"source_cap", g.refused[refusedSource], "last_source", ip, "open", g.total, "unauth", g.unauth)
		g.refused = [3]int64{}
		g.loggedAt = now
	}
	return why
}

// release uncounts a closed connection.
func (g *Gate) release(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if !c.authed {
		g.unauthDoneLocked(c.ip)
	}
}

func (g *Gate) unauthDoneLocked(ip string) {
	g.unauth--
	if g.perSource[ip]--; g.perSource[ip] <= 0 {
		delete(g.perSource, ip)
	}
}

// SignedIn stops counting c (a connection Listen accepted, or anything
// else, which is ignored) as waiting to sign in.
func (g *Gate) SignedIn(nc net.Conn) {
	c, ok := nc.(*Conn)
	if !ok || c.g != g {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !c.authed && !c.closed {
		c.authed = true
		g.unauthDoneLocked(c.ip)
	}
}

// Listen wraps l so that its Accept returns only admitted connections.
func (g *Gate) Listen(l net.Listener) net.Listener { return &listener{Listener: l, g: g} }

type listener struct {
	net.Listener
	g *Gate
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := SourceIP(c.RemoteAddr())
		if why := l.g.admit(ip); why >= 0 {
			refuse(c, refusals[why])
			continue
		}
		return &Conn{Conn: c, g: l.g, ip: ip}, nil
	}
}

// SourceIP is the address a connection's caps and rates are counted by.
func SourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// refuse answers 503 and closes. A fresh socket's send buffer is empty,
// so the write does not wait; what the client already sent is read
// without waiting first, so that the close is a FIN the client reads the
// answer before, not a reset that loses it.
func refuse(c net.Conn, why string) {
	body := why + "\n"
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: %d\r\nRetry-After: 5\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n%s", len(body), body)
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			var buf [4096]byte
			rc.Control(func(fd uintptr) {
				for range 4 {
					if n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_DONTWAIT); n <= 0 || err != nil {
						return
					}
				}
			})
		}
	}
	c.Close()
}

// Conn is an admitted connection; closing it uncounts it.
type Conn struct {
	net.Conn
	g  *Gate
	ip string

	// Guarded by g.mu.
	authed bool
	closed bool
}

func (c *Conn) Close() error {
	c.g.mu.Lock()
	first := !c.closed
	c.closed = true
	c.g.mu.Unlock()
	if first {
		c.g.release(c)
	}
	return c.Conn.Close()
}

// SyscallConn exposes the socket, which the frontend asks how much it may
// write without blocking (SO_MEMINFO).
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("admit: %T has no syscall conn", c.Conn)
	}
	return sc.SyscallConn()
}
