// Package hostile speaks sluice's wire protocol (docs/protocol.md) byte by
// byte over raw socket system calls, for tests that attack the helpers.
// It shares no code with package rpc, so a bug there cannot hide itself
// here: the lines, frames and answers are built and parsed from the
// protocol document alone.
package hostile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BusyLine is what a server at its connection cap says instead of its
// intent (docs/protocol.md, "Busy").
const BusyLine = "sluice busy\n"

// Hello is one side's handshake lines.
type Hello struct {
	Intent  string
	BuildID string
}

// Lines is the hello as sent: "intent\nbuildid\n".
func (h Hello) Lines() []byte { return []byte(h.Intent + "\n" + h.BuildID + "\n") }

// Len is a bare 4-byte big-endian length prefix.
func Len(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// Frame is a length-prefixed frame.
func Frame(body []byte) []byte { return append(Len(uint32(len(body))), body...) }

// Cat joins byte slices.
func Cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Conn is a client socket driven by raw system calls.
type Conn struct {
	fd int
}

// Dial connects to a unix stream socket. The socket is blocking; Timeout
// bounds every later read and write.
func Dial(path string) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hostile: socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("hostile: connect %s: %w", path, err)
	}
	c := &Conn{fd: fd}
	c.Timeout(10 * time.Second)
	return c, nil
}

// FD is the socket's descriptor.
func (c *Conn) FD() int { return c.fd }

// Timeout sets SO_RCVTIMEO and SO_SNDTIMEO.
func (c *Conn) Timeout(d time.Duration) {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// Write sends all of b, with oob as ancillary data on the first sendmsg.
func (c *Conn) Write(b []byte, oob ...byte) error {
	first := true
	for first || len(b) > 0 {
		var o []byte
		if first {
			o = oob
		}
		n, err := unix.SendmsgN(c.fd, b, o, nil, unix.MSG_NOSIGNAL)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		first = false
		b = b[n:]
	}
	return nil
}

// WriteFDs sends b with fds as SCM_RIGHTS.
func (c *Conn) WriteFDs(b []byte, fds []int) error { return c.Write(b, unix.UnixRights(fds...)...) }

// CloseWrite half-closes: the server reads EOF after what was sent.
func (c *Conn) CloseWrite() error { return unix.Shutdown(c.fd, unix.SHUT_WR) }

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Answer is everything a server sent until it closed.
type Answer struct {
	Raw      []byte
	FDs      []int // received with SCM_RIGHTS; the caller closes them
	Reset    bool  // the stream ended with ECONNRESET rather than EOF
	TimedOut bool  // our own read timeout passed before the server closed
}

// ReadAll reads until the server closes (EOF or reset) or the timeout.
func (c *Conn) ReadAll() Answer {
	var a Answer
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*253))
	for {
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for i := range msgs {
					if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
						a.FDs = append(a.FDs, fds...)
					}
				}
			}
		}
		if n > 0 {
			a.Raw = append(a.Raw, buf[:n]...)
		}
		switch {
		case err == nil && n == 0:
			return a
		case err == nil:
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ECONNRESET):
			a.Reset = true
			return a
		case errors.Is(err, unix.EAGAIN):
			a.TimedOut = true
			return a
		default:
			return a
		}
	}
}

// CloseFDs closes the received fds.
func (a Answer) CloseFDs() {
	for _, fd := range a.FDs {
		unix.Close(fd)
	}
}

// Kind names what an answer was.
type Kind string

const (
	Closed    Kind = "closed without a byte"
	Busy      Kind = "busy"
	HelloOnly Kind = "server lines, then closed"
	ErrorKind Kind = "error frame"
	OK        Kind = "payload"
	Malformed Kind = "malformed"
)

// Reply is a parsed answer.
type Reply struct {
	Kind    Kind
	Server  Hello  // the lines the server sent, if any
	Code    string // error frame: the word before ": "
	Text    string // error frame: the whole text
	Payload []byte // payload frame
	Why     string // for Malformed: what was wrong
}

func (r Reply) String() string {
	switch r.Kind {
	case ErrorKind:
		return fmt.Sprintf("error frame %q", r.Text)
	case OK:
		return fmt.Sprintf("payload of %d bytes", len(r.Payload))
	case Malformed:
		return "malformed answer: " + r.Why
	}
	return string(r.Kind)
}

// Parse reads an answer as docs/protocol.md section 3 lays it out.
func (a Answer) Parse() Reply {
	b := a.Raw
	if len(b) == 0 {
		return Reply{Kind: Closed}
	}
	if string(b) == BusyLine {
		return Reply{Kind: Busy}
	}
	line := func() (string, bool) {
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			return "", false
		}
		s := string(b[:i])
		b = b[i+1:]
		return s, true
	}
	intent, ok1 := line()
	id, ok2 := line()
	if !ok1 || !ok2 {
		return Reply{Kind: Malformed, Why: fmt.Sprintf("no server lines in %q", a.Raw)}
	}
	r := Reply{Server: Hello{Intent: intent, BuildID: id}}
	if len(b) == 0 {
		r.Kind = HelloOnly
		return r
	}
	frame := func() ([]byte, bool) {
		if len(b) < 4 {
			return nil, false
		}
		l := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(l) {
			return nil, false
		}
		f := b[4 : 4+l]
		b = b[4+l:]
		return f, true
	}
	ef, ok := frame()
	if !ok {
		r.Kind, r.Why = Malformed, fmt.Sprintf("cut error frame in %q", a.Raw)
		return r
	}
	if len(ef) > 0 {
		r.Kind, r.Text = ErrorKind, string(ef)
		r.Code, _, _ = strings.Cut(r.Text, ": ")
		if len(b) != 0 {
			r.Kind, r.Why = Malformed, fmt.Sprintf("%d bytes after the error frame", len(b))
		}
		return r
	}
	pf, ok := frame()
	if !ok {
		r.Kind, r.Why = Malformed, fmt.Sprintf("cut payload frame in %q", a.Raw)
		return r
	}
	if len(b) != 0 {
		r.Kind, r.Why = Malformed, fmt.Sprintf("%d bytes after the payload", len(b))
		return r
	}
	r.Kind, r.Payload = OK, pf
	return r
}

// Exchange dials, writes req, half-closes and reads the whole answer.
func Exchange(path string, req []byte) (Answer, error) {
	c, err := Dial(path)
	if err != nil {
		return Answer{}, err
	}
	defer c.Close()
	// A server may refuse before reading everything; what it answered
	// still counts, so write errors are not the outcome.
	c.Write(req)
	c.CloseWrite()
	return c.ReadAll(), nil
}

// CountFDs counts the open fds of a process ("self" for this one).
func CountFDs(pid string) (int, error) {
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}
