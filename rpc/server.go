package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// Allow is a route's peer policy: the kernel-reported caller is let in when
// its uid is in UIDs, or its gid or one of its supplementary groups is in
// GIDs. The zero Allow lets nobody in.
type Allow struct {
	UIDs []uint32
	GIDs []uint32
}

func (a Allow) String() string { return fmt.Sprintf("uids=%v gids=%v", a.UIDs, a.GIDs) }

// Peer is the caller as the kernel reports it.
type Peer struct {
	Creds
	Groups []uint32 // SO_PEERGROUPS; filled only when the policy needed them
}

// Call is one request as a handler sees it.
type Call struct {
	Peer   Peer
	Intent string     // the client intent that selected the route
	Body   []byte     // the request frame (msgpack); valid during the handler
	FDs    []*os.File // received fds, at most the route's MaxFDs; the handler owns them
	Label  string     // set by the handler (the operation name) for the call log
	// Attrs are more fields for the call's log line, set by the handler:
	// the fleet host and user of a call that came through the gateway.
	Attrs []slog.Attr
}

// Decode unmarshals the request frame. Its error is a bad-request *Error.
func (c *Call) Decode(v any) error {
	if err := checkMsgpack(c.Body); err != nil {
		return &Error{Code: CodeBadRequest, Msg: fmt.Sprintf("undecodable %T: %v", v, err)}
	}
	if err := msgpack.Unmarshal(c.Body, v); err != nil {
		return &Error{Code: CodeBadRequest, Msg: fmt.Sprintf("undecodable %T: %v", v, err)}
	}
	return nil
}

// Reply is a handler's answer. Body is msgpack-encoded into the payload
// frame; FDs ride on it as SCM_RIGHTS and are closed by the server once sent.
type Reply struct {
	Body any
	FDs  []*os.File
}

// HandlerFunc serves one call. An *Error is sent with its code; any other
// error is sent as "internal" and its text only logged.
type HandlerFunc func(ctx context.Context, c *Call) (Reply, error)

// Route binds one client intent to its expected build ID, the answer lines,
// the peer policy and the handler.
type Route struct {
	Client Hello
	Server Hello
	Allow  Allow
	MaxFDs int
	Handle HandlerFunc
}

// Server serves one-shot calls. The zero values of the limits mean the
// defaults: 64 KiB frames, 5 s per call, 64 concurrent connections.
type Server struct {
	Routes   []Route
	MaxFrame int
	Timeout  time.Duration
	MaxConns int
	Log      *slog.Logger
	Name     string // component name for logs

	// Reserved callers get ReservedConns connection slots of their own
	// (default 64), taken once the MaxConns everyone shares are all in
	// use, so that a caller who may connect but is trusted less cannot
	// hold every slot and make theirs busy (ptystore keeps policy's puts apart from the
	// frontend's calls). Who is reserved is the kernel's word at connect
	// time (SO_PEERCRED, SO_PEERGROUPS); which pool a connection took
	// decides nothing else, every call is still checked by its route.
	Reserved      Allow
	ReservedConns int

	once   sync.Once
	sem    chan struct{}
	rsem   chan struct{} // the Reserved callers' slots; nil without any
	routes map[string]*Route
	inited error
}

func (s *Server) init() error {
	s.once.Do(func() {
		if s.MaxFrame <= 0 {
			s.MaxFrame = DefaultMaxFrame
		}
		if s.Timeout <= 0 {
			s.Timeout = defaultTimeout
		}
		if s.MaxConns <= 0 {
			s.MaxConns = 64
		}
		if s.Log == nil {
			s.Log = slog.Default()
		}
		s.sem = make(chan struct{}, s.MaxConns)
		if len(s.Reserved.UIDs) > 0 || len(s.Reserved.GIDs) > 0 {
			if s.ReservedConns <= 0 {
				s.ReservedConns = 64
			}
			s.rsem = make(chan struct{}, s.ReservedConns)
		}
		s.routes = make(map[string]*Route, len(s.Routes))
		for i := range s.Routes {
			r := &s.Routes[i]
			if err := r.Client.Valid(); err != nil {
				s.inited = fmt.Errorf("rpc: route %d client hello: %w", i, err)
				return
			}
			if err := r.Server.Valid(); err != nil {
				s.inited = fmt.Errorf("rpc: route %d server hello: %w", i, err)
				return
			}
			if r.Handle == nil {
				s.inited = fmt.Errorf("rpc: route %q has no handler", r.Client.Intent)
				return
			}
			if _, dup := s.routes[r.Client.Intent]; dup {
				s.inited = fmt.Errorf("rpc: intent %q routed twice", r.Client.Intent)
				return
			}
			s.routes[r.Client.Intent] = r
		}
		if len(s.routes) == 0 {
			s.inited = errors.New("rpc: server without routes")
		}
	})
	return s.inited
}

// Listen creates a unix stream socket at path with the given mode, and with
// SO_PASSCRED set before any connection can be accepted, so every byte a
// client sends arrives with its kernel credentials.
//
// Whatever is at path is dialed first: a socket someone answers on is left
// alone and Listen fails with ErrInUse (a second helper started with
// --listen must not take a running one's socket), as it does for a path
// that is not a socket. Only a socket file nobody listens on (the kernel
// refuses the connection: its server is gone) is removed and replaced.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := clearStale(path); err != nil {
		return nil, fmt.Errorf("rpc: listen %s: %w", path, err)
	}
	// Bind under a umask that leaves the socket unreachable until chmod.
	old := unix.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("rpc: listen %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	if err := setPassCred(l); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("rpc: listen %s: %w", path, err)
	}
	return l, nil
}

// clearStale removes a socket file at path that nobody listens on, and
// refuses anything else that is there.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%w: %s is not a socket", ErrInUse, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: a server answers there", ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// EACCES, EAGAIN (a live server's full backlog), a timeout: not
		// proof that the socket is dead, so it stays.
		return fmt.Errorf("%w: %v", ErrInUse, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Serve accepts until ctx is done or the listener is closed. Accept errors
// (EMFILE and the like) never end it: it backs off and goes on.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	if err := s.init(); err != nil {
		return err
	}
	if err := setPassCred(l); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	// A connection goes to a worker parked after its last call if there
	// is one, else to a new goroutine (see worker).
	handoff := make(chan slot)
	defer close(handoff)
	var idle atomic.Int32
	var backoff time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			s.Log.Warn("rpc: accept failed, backing off", "server", s.Name, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		sem := s.take(c)
		if sem == nil {
			// Full: say so at once rather than queue. The busy line is no
			// intent of any protocol, so no client can mistake it.
			c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			c.Write([]byte(busyLine + "\n"))
			c.Close()
			s.Log.Warn("rpc: busy, refused a connection", "server", s.Name, "max_conns", s.MaxConns, "reserved_conns", cap(s.rsem))
			continue
		}
		select {
		case handoff <- slot{c, sem}:
		default:
			wg.Add(1)
			go s.worker(ctx, slot{c, sem}, handoff, &idle, &wg)
		}
	}
}

// MaxIdleWorkers bounds the serving goroutines a Server keeps parked
// between calls: its goroutine count may stay this much above what it was
// before a burst of calls, and no more.
const MaxIdleWorkers = 16

// worker serves c, then waits for another connection while fewer than
// MaxIdleWorkers others wait. A call's goroutine needs ~8 KiB of stack
// (the handshake, msgpack, the handler, the call line) and a new one
// starts with 2 KiB, so a goroutine per call grew its stack by copying
// two or three times on every call, walking the frames each time (perf:
// runtime.newstack 4-7% of the helper's CPU); a kept worker has its
// stack already.
func (s *Server) worker(ctx context.Context, c slot, handoff <-chan slot, idle *atomic.Int32, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		s.serveConn(ctx, c.conn)
		<-c.sem
		if idle.Add(1) > MaxIdleWorkers {
			idle.Add(-1)
			return
		}
		var ok bool
		c, ok = <-handoff
		idle.Add(-1)
		if !ok {
			return
		}
	}
}

// slot is an accepted connection and the pool whose slot it holds.
type slot struct {
	conn *net.UnixConn
	sem  chan struct{}
}

// take takes a slot for c and returns its pool, or nil when there is
// none: a shared one if any is free, else, for a Reserved caller, one of
// theirs. The kernel is asked who connected only once the shared slots
// are all taken, so a call costs nothing more while they are not.
func (s *Server) take(c *net.UnixConn) chan struct{} {
	select {
	case s.sem <- struct{}{}:
		return s.sem
	default:
	}
	if s.rsem == nil || !s.reservedPeer(c) {
		return nil
	}
	select {
	case s.rsem <- struct{}{}:
		return s.rsem
	default:
		return nil
	}
}

// reservedPeer reports whether the process that connected c is one
// Reserved admits; any doubt (no credentials) is the shared pool.
func (s *Server) reservedPeer(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var uc *unix.Ucred
	var uerr error
	if err := rc.Control(func(fd uintptr) {
		uc, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || uerr != nil {
		return false
	}
	ok, err := s.allowed(rc, s.Reserved, &Peer{Creds: Creds{UID: uc.Uid, GID: uc.Gid}})
	return ok && err == nil
}

// ServeConn serves the one call on an already accepted connection, as a
// systemd Accept=yes instance does, and closes it.
func (s *Server) ServeConn(ctx context.Context, c *net.UnixConn) error {
	if err := s.init(); err != nil {
		c.Close()
		return err
	}
	return s.serveConn(ctx, c)
}

var outPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

var readerPool = sync.Pool{New: func() any { return newMsgReader() }}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) (err error) {
	start := time.Now()
	defer c.Close()
	deadline := start.Add(s.Timeout)
	c.SetDeadline(deadline)
	cctx := newCallCtx(ctx, deadline)
	defer cctx.release()

	r := readerPool.Get().(*msgReader)
	if rerr := r.reset(c, true); rerr != nil {
		readerPool.Put(r)
		return fmt.Errorf("rpc: %w", rerr)
	}
	defer func() {
		r.release()
		if cap(r.buf) <= 4096 {
			readerPool.Put(r)
		}
	}()

	refuse := func(reason string, err error) error {
		s.Log.Warn("rpc: refused", "server", s.Name, "reason", reason, "err", err,
			"pid", r.creds.PID, "uid", r.creds.UID, "gid", r.creds.GID, "creds", r.haveCreds)
		return fmt.Errorf("rpc: %s: %w", reason, err)
	}

	// 1. Handshake. Nothing past the two lines is looked at before they pass.
	var intent, id []byte
	var used int
	for {
		var need bool
		var perr error
		intent, id, used, need, perr = parseHello(r.buf[:r.n])
		if perr != nil {
			return refuse("bad handshake", perr)
		}
		if !need {
			break
		}
		if ferr := r.fill(MaxIntentLine + BuildIDLine); ferr != nil {
			if errors.Is(ferr, io.EOF) {
				ferr = ErrTruncated
			}
			return refuse("handshake read", ferr)
		}
	}
	route := s.routes[string(intent)]
	if route == nil {
		return refuse("unknown intent", fmt.Errorf("%w: %q", ErrHandshake, intent))
	}
	if string(id) != route.Client.BuildID {
		return refuse("build ID mismatch", fmt.Errorf("%w: intent %q build ID %s, want %s",
			ErrHandshake, intent, id, route.Client.BuildID))
	}
	hello := route.Client

	// 2. Who is calling: the creds on the bytes must be those of the process
	// that connected; otherwise the connected fd was handed to someone else
	// and SO_PEERGROUPS would describe the wrong process.
	pc, perr := peerCred(r.rc)
	if perr != nil {
		return refuse("peer credentials", perr)
	}
	if pc != r.creds {
		return refuse("credentials", fmt.Errorf("%w: connected as %v, writing as %v", ErrCredentials, pc, r.creds))
	}
	peer := Peer{Creds: r.creds}
	outp := outPool.Get().(*[]byte)
	defer func() {
		if cap(*outp) <= 64<<10 {
			outPool.Put(outp)
		}
	}()
	out := route.Server.appendLines((*outp)[:0])
	helloSent := false
	allowed, gerr := s.allowed(r.rc, route.Allow, &peer)
	if gerr != nil {
		return refuse("peer groups", gerr)
	}
	if !allowed {
		return s.forbid(c, out, hello.Intent, &peer)
	}

	// 3. The request frame. A client that waits for our lines before
	// sending gets them now; a pipelining one gets them with the answer.
	var body []byte
	for {
		b, n, need, ferr := ParseFrame(r.buf[used:r.n], s.MaxFrame)
		if ferr != nil {
			s.writeError(c, out, &Error{Code: CodeBadRequest, Msg: ferr.Error()})
			return refuse("request frame", ferr)
		}
		if !need {
			body = b
			if used+n != r.n {
				e := &Error{Code: CodeBadRequest, Msg: fmt.Sprintf("%d bytes after the request frame", r.n-used-n)}
				s.writeError(c, out, e)
				return refuse("request frame", e)
			}
			break
		}
		if !helloSent {
			if _, werr := c.Write(out); werr != nil {
				return refuse("write handshake", werr)
			}
			out, helloSent = out[:0], true
		}
		if ferr := r.fill(used + 4 + s.MaxFrame); ferr != nil {
			if errors.Is(ferr, io.EOF) {
				ferr = ErrTruncated
			}
			return refuse("request read", ferr)
		}
	}
	if len(r.fds) > route.MaxFDs {
		e := &Error{Code: CodeBadRequest, Msg: fmt.Sprintf("%d fds received, call takes at most %d", len(r.fds), route.MaxFDs)}
		s.writeError(c, out, e)
		return refuse("fds", e)
	}

	// Length claims beyond the frame would make the decoder allocate for
	// them; no handler sees such a frame (see checkMsgpack).
	if merr := checkMsgpack(body); merr != nil {
		e := &Error{Code: CodeBadRequest, Msg: "undecodable request frame: " + merr.Error()}
		s.writeError(c, out, e)
		return refuse("request frame", e)
	}

	// 4. The handler.
	call := Call{Peer: peer, Intent: hello.Intent, Body: body, FDs: r.takeFDs()}
	rep, herr := s.invoke(cctx, route, &call)
	defer closeFiles(rep.FDs)
	// The payload is encoded straight after the error frame's place in
	// out, so the answer stays one buffer and one write.
	var payload []byte
	var aw *appendWriter
	if herr == nil {
		aw = getAppendWriter(out)
		aw.b = appendStringFrame(aw.b, "")
		aw.b = append(aw.b, 0, 0, 0, 0)
		mark := len(aw.b)
		if herr = aw.encode(rep.Body); herr != nil {
			herr = fmt.Errorf("encode reply %T: %w", rep.Body, herr)
		} else {
			payload = aw.b[mark:]
			binary.BigEndian.PutUint32(aw.b[mark-4:], uint32(len(payload)))
		}
		*outp = aw.b[:0]
		putAppendWriter(aw)
	}
	result := "ok"
	if herr != nil {
		var e *Error
		if !errors.As(herr, &e) {
			e = s.internal(hello.Intent, call.Label, herr)
		}
		result = e.Code
		s.writeError(c, out, e)
	} else {
		out = (*outp)[:len(out)+4+4+len(payload)]
		if werr := writeWithFDs(c, out, rep.FDs); werr != nil {
			result = "write failed"
			err = fmt.Errorf("rpc: write reply: %w", werr)
		}
	}
	// The caller has its answer: the connection goes before the log line
	// is formatted and written, so neither sits on the call's path (a
	// runner or journal slow to take the line holds up only this helper).
	c.Close()
	if s.Log.Enabled(ctx, slog.LevelInfo) {
		s.logCall(ctx, hello.Intent, &call, result, start)
	}
	return err
}

// The cold and the after-the-answer parts of serveConn are functions of
// their own so that their argument lists are not in serveConn's frame:
// every call's goroutine starts on a small stack, and a larger frame is
// a stack copy before the call has read a byte.

//go:noinline
func (s *Server) logCall(ctx context.Context, intent string, call *Call, result string, start time.Time) {
	s.Log.LogAttrs(ctx, slog.LevelInfo, "rpc: call", slog.String("server", s.Name),
		slog.String("intent", intent), slog.String("call", call.Label),
		slog.Int("pid", int(call.Peer.PID)), slog.Int("uid", int(call.Peer.UID)),
		slog.String("result", result), slog.Duration("duration", time.Since(start)),
		slog.GroupAttrs("", call.Attrs...))
}

//go:noinline
func (s *Server) forbid(c *net.UnixConn, out []byte, intent string, peer *Peer) error {
	s.Log.Warn("rpc: forbidden", "server", s.Name, "intent", intent,
		"pid", peer.PID, "uid", peer.UID, "gid", peer.GID, "groups", peer.Groups)
	s.writeError(c, out, &Error{Code: CodeForbidden, Msg: fmt.Sprintf("uid %d gid %d may not call %q", peer.UID, peer.GID, intent)})
	return fmt.Errorf("rpc: forbidden: %v", peer.Creds)
}

//go:noinline
func (s *Server) internal(intent, label string, herr error) *Error {
	s.Log.Error("rpc: handler failed", "server", s.Name, "intent", intent, "call", label, "err", herr)
	return &Error{Code: CodeInternal, Msg: "internal error, see the helper's log"}
}

func (s *Server) invoke(ctx context.Context, route *Route, call *Call) (rep Reply, err error) {
	defer func() {
		if p := recover(); p != nil {
			// A handler bug must cost one call, not the long-running helper.
			err = fmt.Errorf("panic in handler: %v", p)
			closeFiles(call.FDs)
		}
	}()
	return route.Handle(ctx, call)
}

func (s *Server) allowed(rc syscall.RawConn, a Allow, p *Peer) (bool, error) {
	if slices.Contains(a.UIDs, p.UID) || slices.Contains(a.GIDs, p.GID) {
		return true, nil
	}
	if len(a.GIDs) == 0 {
		return false, nil
	}
	g, err := peerGroups(rc)
	if err != nil {
		return false, err
	}
	p.Groups = g
	for _, gid := range g {
		if slices.Contains(a.GIDs, gid) {
			return true, nil
		}
	}
	return false, nil
}

func (s *Server) writeError(c *net.UnixConn, out []byte, e *Error) {
	text := e.Error()
	if len(text) > 4096 {
		text = text[:4096]
	}
	out = appendStringFrame(out, text)
	c.Write(out)
}

// writeWithFDs writes b, with fds as SCM_RIGHTS on the first chunk.
func writeWithFDs(c *net.UnixConn, b []byte, fds []*os.File) error {
	var oob []byte
	if len(fds) > 0 {
		ints := make([]int, len(fds))
		for i, f := range fds {
			ints[i] = int(f.Fd())
		}
		oob = unix.UnixRights(ints...)
	}
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		_, err = c.Write(b[n:])
	}
	return err
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
