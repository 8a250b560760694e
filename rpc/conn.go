package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Creds is what the kernel says about the process at the other end. It is
// never taken from anything the peer writes.
type Creds struct {
	PID int32
	UID uint32
	GID uint32
}

func (c Creds) String() string { return fmt.Sprintf("pid=%d uid=%d gid=%d", c.PID, c.UID, c.GID) }

// maxFDsPerMsg is the kernel's SCM_MAX_FD: no more rights than this can ride
// on one sendmsg, so an oob buffer this size never truncates them (a
// truncated control message would make the kernel drop fds we must close).
const maxFDsPerMsg = 253

var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4*maxFDsPerMsg)

// msgReader reads a unix stream connection with recvmsg, keeping the bytes
// in one growing buffer and checking that every read carries the same
// kernel credentials (when wantCreds). Received fds are collected.
//
// It calls recvmsg(2) itself through the connection's RawConn (the
// poller's wait and the deadlines as for Read) rather than through
// ReadMsgUnix: that asks the kernel for the sender's address on every read
// and allocates it, and its control messages are parsed into a fresh
// slice; neither is needed here and both were a share of every call.
type msgReader struct {
	c         *net.UnixConn
	rc        syscall.RawConn // c's, taken once per connection
	buf       []byte
	n         int // bytes valid in buf
	oob       []byte
	wantCreds bool
	creds     Creds
	haveCreds bool
	fds       []int
	eof       bool

	// The one recvmsg in flight: its arguments and results, and recvFn,
	// the method value handed to rc.Read (bound once per pooled reader, so
	// a read allocates no closure).
	hdr    unix.Msghdr
	iov    unix.Iovec
	rn     int
	rflags int
	rerr   syscall.Errno
	recvFn func(fd uintptr) bool
}

func newMsgReader() *msgReader {
	r := &msgReader{buf: make([]byte, 512), oob: make([]byte, oobSize)}
	r.recvFn = r.recv
	return r
}

// reset makes a pooled reader read c. wantCreds: every read must carry
// SCM_CREDENTIALS (the server side).
func (r *msgReader) reset(c *net.UnixConn, wantCreds bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	r.c, r.rc, r.n, r.wantCreds, r.haveCreds, r.eof = c, rc, 0, wantCreds, false, false
	r.creds = Creds{}
	return nil
}

// release drops the connection and closes fds nobody took.
func (r *msgReader) release() {
	r.closeFDs()
	r.c, r.rc = nil, nil
	r.iov.Base, r.hdr.Iov, r.hdr.Control = nil, nil, nil
}

// recv is the body of rc.Read: one recvmsg(2) into the iov and oob set up
// by fill, without a name buffer (a connected stream has one peer). It
// reports done unless the socket has nothing yet (the poller waits).
func (r *msgReader) recv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.hdr)), unix.MSG_CMSG_CLOEXEC)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			r.rn, r.rflags = int(n), int(r.hdr.Flags)
		}
		r.rerr = e
		return true
	}
}

// recvmsg reads into p with r.oob for control messages.
func (r *msgReader) recvmsg(p []byte) (n, oobn, flags int, err error) {
	r.iov.Base = &p[0]
	r.iov.SetLen(len(p))
	r.hdr.Iov = &r.iov
	r.hdr.Iovlen = 1
	r.hdr.Control = &r.oob[0]
	r.hdr.SetControllen(len(r.oob))
	r.hdr.Flags = 0
	r.rn, r.rflags, r.rerr = 0, 0, 0
	if rerr := r.rc.Read(r.recvFn); rerr != nil {
		return 0, 0, 0, rerr
	}
	if r.rerr != 0 {
		return 0, 0, 0, r.rerr
	}
	return r.rn, int(r.hdr.Controllen), r.rflags, nil
}

// fill does one recvmsg, appending at most max-r.n bytes. It reports io.EOF
// (or ECONNRESET as EOF) when the peer is gone.
func (r *msgReader) fill(max int) error {
	if r.eof {
		return io.EOF
	}
	if r.n >= max {
		return fmt.Errorf("rpc: read limit %d reached", max)
	}
	if r.n == len(r.buf) {
		// Grow geometrically but never past the limit: a peer announcing a
		// large frame only gets memory as it actually sends bytes.
		size := 2 * len(r.buf)
		if size < 512 {
			size = 512
		}
		if size > max {
			size = max
		}
		nb := make([]byte, size)
		copy(nb, r.buf[:r.n])
		r.buf = nb
	}
	end := len(r.buf)
	if end > max {
		end = max
	}
	n, oobn, flags, err := r.recvmsg(r.buf[r.n:end])
	if oobn > 0 {
		if perr := r.parseOOB(r.oob[:oobn], n > 0); perr != nil {
			return perr
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("%w: control message truncated", ErrCredentials)
	}
	if n > 0 {
		if r.wantCreds && oobn == 0 {
			return fmt.Errorf("%w: data without SCM_CREDENTIALS", ErrCredentials)
		}
		r.n += n
	}
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
			r.eof = true
			if n > 0 {
				return nil
			}
			return io.EOF
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		return err
	}
	if n == 0 {
		r.eof = true
		return io.EOF
	}
	return nil
}

// parseOOB collects fds and checks credentials. On the zero-byte read
// that reports end of stream the kernel attaches credentials of pid 0,
// describing no bytes and no sender: those are ignored (data=false).
func (r *msgReader) parseOOB(oob []byte, data bool) error {
	credsSeen := false
	for len(oob) >= unix.CmsgLen(0) {
		h, body, rest, err := nextCmsg(oob)
		if err != nil {
			return fmt.Errorf("rpc: control message: %w", err)
		}
		oob = rest
		if h.Level != unix.SOL_SOCKET {
			continue
		}
		switch h.Type {
		case unix.SCM_RIGHTS:
			for i := 0; i+4 <= len(body); i += 4 {
				r.fds = append(r.fds, int(int32(binary.NativeEndian.Uint32(body[i:]))))
			}
		case unix.SCM_CREDENTIALS:
			if !data {
				continue
			}
			if len(body) < unix.SizeofUcred {
				return fmt.Errorf("%w: %v", ErrCredentials, unix.EINVAL)
			}
			uc := (*unix.Ucred)(unsafe.Pointer(&body[0]))
			c := Creds{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}
			credsSeen = true
			if !r.haveCreds {
				r.creds, r.haveCreds = c, true
			} else if c != r.creds {
				return fmt.Errorf("%w: first %v, now %v", ErrCredentials, r.creds, c)
			}
		}
	}
	if r.wantCreds && data && !credsSeen {
		return fmt.Errorf("%w: no SCM_CREDENTIALS", ErrCredentials)
	}
	return nil
}

// nextCmsg splits the first control message off oob, as
// unix.ParseSocketControlMessage does for each (same checks, same
// alignment; trailing bytes too short for a header are ignored) but
// without allocating: this runs on every read of a call.
func nextCmsg(oob []byte) (h unix.Cmsghdr, body, rest []byte, err error) {
	h = *(*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if uint64(h.Len) < unix.SizeofCmsghdr || uint64(h.Len) > uint64(len(oob)) {
		return h, nil, nil, unix.EINVAL
	}
	body = oob[unix.CmsgLen(0):h.Len]
	const align = int(unsafe.Sizeof(uintptr(0)))
	next := (int(h.Len) + align - 1) &^ (align - 1)
	if next > len(oob) {
		next = len(oob)
	}
	return h, body, oob[next:], nil
}

// closeFDs closes every received fd not yet handed out.
func (r *msgReader) closeFDs() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
}

// takeFDs hands the received fds out as files.
func (r *msgReader) takeFDs() []*os.File {
	if len(r.fds) == 0 {
		return nil
	}
	fs := make([]*os.File, len(r.fds))
	for i, fd := range r.fds {
		fs[i] = os.NewFile(uintptr(fd), fmt.Sprintf("rpc-fd-%d", i))
	}
	r.fds = nil
	return fs
}

// peerCred returns SO_PEERCRED: who connect()ed, as the kernel recorded it.
func peerCred(rc syscall.RawConn) (Creds, error) {
	var uc *unix.Ucred
	var serr error
	err := rc.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return Creds{}, fmt.Errorf("rpc: SO_PEERCRED: %w", err)
	}
	return Creds{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

// peerGroups returns SO_PEERGROUPS: the supplementary groups of the process
// that connected, as of connect().
func peerGroups(rc syscall.RawConn) ([]uint32, error) {
	var groups []uint32
	var serr error
	err := rc.Control(func(fd uintptr) {
		buf := make([]uint32, 64)
		for {
			l := uint32(len(buf) * 4)
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
				uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
			if e == unix.ERANGE && int(l/4) > len(buf) {
				buf = make([]uint32, l/4)
				continue
			}
			if e != 0 {
				serr = e
				return
			}
			groups = buf[:l/4]
			return
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("rpc: SO_PEERGROUPS: %w", err)
	}
	return groups, nil
}

// setPassCred turns SO_PASSCRED on for a socket.
func setPassCred(sc syscall.Conn) error {
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("rpc: SO_PASSCRED: %w", err)
	}
	return nil
}
