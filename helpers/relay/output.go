package relay

import (
	"errors"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The session's output to the channel. A pty hands its reader at most
// 4 KiB per read (the line discipline's buffer), a kernel worker's round
// each; copied as read, every 4 KiB of a flood would be a write to sshd's
// pipe, a wake-up of sshd, a packet and its crypto, and a write by the
// gateway's ssh. When a read comes back large, more is on its way: the
// relay gathers what arrives within gatherWait of the last read, up to
// gatherMax, and writes it at once. A small read (a key's echo, a
// prompt) is written at once, so typing waits for nothing.
const (
	gatherFrom = 2 << 10
	gatherMax  = 32 << 10
	gatherWait = 200 * time.Microsecond
)

// copyOut copies master to dst until either fails; nil when the session
// ends (the master's EIO or EOF).
func copyOut(dst io.Writer, master *os.File) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = gatherCopy(dst, int(fd)) }); err != nil {
		return err
	}
	return cerr
}

func gatherCopy(dst io.Writer, fd int) error {
	buf := make([]byte, gatherMax)
	wait := unix.NsecToTimespec(int64(gatherWait))
	for {
		n, err := readFD(fd, buf)
		if n <= 0 {
			if err == nil || errors.Is(err, unix.EIO) {
				return nil
			}
			return err
		}
		for n >= gatherFrom && len(buf)-n >= 4<<10 {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if k, _ := unix.Ppoll(p, &wait, nil); k <= 0 || p[0].Revents&unix.POLLIN == 0 {
				break
			}
			m, _ := readFD(fd, buf[n:])
			if m <= 0 {
				break // the next read says why
			}
			n += m
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return err
		}
	}
}

// readFD is one read(2) that waits for data whatever the fd's
// O_NONBLOCK (which the master's other holders share).
func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
			continue
		}
		return n, err
	}
}
