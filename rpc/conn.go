package rpc

import (
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
type msgReader struct {
	c         *net.UnixConn
	buf       []byte
	n         int // bytes valid in buf
	oob       []byte
	wantCreds bool
	creds     Creds
	haveCreds bool
	fds       []int
	eof       bool
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
	n, oobn, flags, _, err := r.c.ReadMsgUnix(r.buf[r.n:end], r.oob)
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
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("rpc: control message: %w", err)
	}
	credsSeen := false
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(m)
			if err != nil {
				return fmt.Errorf("rpc: SCM_RIGHTS: %w", err)
			}
			r.fds = append(r.fds, fds...)
		case unix.SCM_CREDENTIALS:
			if !data {
				continue
			}
			uc, err := unix.ParseUnixCredentials(m)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCredentials, err)
			}
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
func peerCred(c *net.UnixConn) (Creds, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Creds{}, err
	}
	var uc *unix.Ucred
	var serr error
	err = rc.Control(func(fd uintptr) {
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
func peerGroups(c *net.UnixConn) ([]uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var groups []uint32
	var serr error
	err = rc.Control(func(fd uintptr) {
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
