package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// Fuzz targets for everything that reads bytes a peer chose: the frame
// and handshake parsers, a real Server reading a hostile stream, and a
// real Client reading a hostile server. Seeds live in testdata/fuzz/ as
// well; scripts/fuzz.sh runs every target.

// fuzzMaxFrame is small so the fuzzer reaches the limit and limit+1.
const fuzzMaxFrame = 256

func FuzzParseFrame(f *testing.F) {
	for _, s := range [][]byte{
		nil, {0}, {0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 1, 0xc0}, {0, 0, 0, 2, 0xc0},
		{0, 0, 1, 0}, {0, 0, 1, 1}, {0xff, 0xff, 0xff, 0xff}, {0x80, 0, 0, 0},
	} {
		f.Add(s, uint32(fuzzMaxFrame))
	}
	f.Add(frame(bytes.Repeat([]byte{'x'}, 256)), uint32(256))
	f.Add(frame(bytes.Repeat([]byte{'x'}, 257)), uint32(256))
	f.Fuzz(func(t *testing.T, b []byte, max uint32) {
		max %= 1 << 20
		body, n, need, err := ParseFrame(b, int(max))
		switch {
		case len(b) < 4:
			if !need || err != nil || n != 0 || body != nil {
				t.Fatalf("%d bytes: need=%v n=%d err=%v, want need", len(b), need, n, err)
			}
			return
		case err != nil:
			l := binary.BigEndian.Uint32(b)
			if !errors.Is(err, ErrFrameTooLarge) || l <= max || need || n != 0 {
				t.Fatalf("length %d limit %d: err=%v need=%v n=%d", l, max, err, need, n)
			}
			// The limit holds whatever follows: a reader may stop at once.
			if _, _, _, err2 := ParseFrame(append(b[:4:4], make([]byte, 64)...), int(max)); err2 == nil {
				t.Fatalf("length %d refused alone but accepted with more bytes", l)
			}
			return
		case need:
			l := binary.BigEndian.Uint32(b)
			if l > max || uint64(len(b)) >= 4+uint64(l) {
				t.Fatalf("need with length %d, %d bytes, limit %d", l, len(b), max)
			}
			return
		}
		if n != 4+len(body) || n > len(b) || len(body) > int(max) {
			t.Fatalf("n=%d body=%d have=%d limit=%d", n, len(body), len(b), max)
		}
		if !bytes.Equal(appendFrame(nil, body), b[:n]) {
			t.Fatalf("frame does not re-encode to its bytes")
		}
		// Every proper prefix is incomplete, never an error.
		for _, k := range []int{0, 3, 4, n - 1} {
			if k < 0 || k >= n {
				continue
			}
			if _, _, need, err := ParseFrame(b[:k], int(max)); !need || err != nil {
				t.Fatalf("prefix %d of a %d-byte frame: need=%v err=%v", k, n, need, err)
			}
		}
	})
}

func FuzzParseHello(f *testing.F) {
	good := string(hello(tClient))
	for _, s := range []string{
		"", "\n", "\n\n", good, good[:10], good[:len(good)-1], good + "trailing",
		"sluice x\n" + strings.Repeat("A", 64) + "\n",
		"sluice x\n" + strings.Repeat("a", 63) + "\n",
		"sluice x\n" + strings.Repeat("a", 65) + "\n",
		strings.Repeat("i", 256) + "\n" + strings.Repeat("a", 64) + "\n",
		strings.Repeat("i", 257) + "\n",
		"sluice\x00x\n" + strings.Repeat("a", 64) + "\n",
		"sluice x\r\n" + strings.Repeat("a", 64) + "\r\n",
		busyLine + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, need, err := ParseHello(b)
		if err != nil {
			if need || n != 0 || h != (Hello{}) {
				t.Fatalf("error %v with need=%v n=%d h=%+v", err, need, n, h)
			}
			// Refusal is final: no further bytes can make it acceptable.
			if _, _, _, err := ParseHello(append(b[:len(b):len(b)], "x\n\n"...)); err == nil {
				t.Fatalf("%q refused, but accepted with more bytes", b)
			}
			return
		}
		if need {
			if n != 0 || h != (Hello{}) {
				t.Fatalf("need with n=%d h=%+v", n, h)
			}
			if len(b) >= MaxIntentLine+BuildIDLine {
				t.Fatalf("still need more after %d bytes; the limits are %d+%d", len(b), MaxIntentLine, BuildIDLine)
			}
			return
		}
		if err := h.Valid(); err != nil {
			t.Fatalf("accepted an invalid hello %+v: %v", h, err)
		}
		if !bytes.Equal(h.appendLines(nil), b[:n]) {
			t.Fatalf("hello %+v does not re-encode to %q", h, b[:n])
		}
		if _, _, need, err := ParseHello(b[:n-1]); !need || err != nil {
			t.Fatalf("prefix of a good hello: need=%v err=%v", need, err)
		}
	})
}

// serverOutcome is what a Server did with one hostile byte stream.
type serverOutcome struct {
	out    []byte   // everything the server wrote before closing
	called [][]byte // request bodies the handler saw
	err    error    // ServeConn's result
}

// serveStream feeds data to a real Server over a socketpair, in two
// writes split at split, then half-closes, and collects the outcome. The
// server must close the connection on its own: the read has a generous
// deadline only so that a hang fails instead of stalling the fuzzer.
func serveStream(t *testing.T, data []byte, split int) serverOutcome {
	t.Helper()
	var o serverOutcome
	var mu sync.Mutex
	srv := &Server{
		Name: "fuzz", Log: quietLog(), MaxFrame: fuzzMaxFrame, Timeout: 5 * time.Second,
		Routes: []Route{{
			Client: tClient, Server: tServer,
			Allow: Allow{UIDs: []uint32{uint32(os.Getuid())}},
			Handle: func(ctx context.Context, c *Call) (Reply, error) {
				mu.Lock()
				o.called = append(o.called, bytes.Clone(c.Body))
				mu.Unlock()
				return echoHandler(ctx, c)
			},
		}},
	}
	sc, cc := socketPair(t)
	defer cc.Close()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), sc) }()
	go func() {
		if split < 0 || split > len(data) {
			split = len(data)
		}
		cc.Write(data[:split])
		if split < len(data) {
			cc.Write(data[split:])
		}
		cc.CloseWrite()
	}()
	cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf bytes.Buffer
	_, rerr := io.Copy(&buf, cc)
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Fatalf("server never closed the connection (input %q)", data)
	}
	o.out = buf.Bytes()
	select {
	case o.err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("ServeConn did not return after closing (input %q)", data)
	}
	mu.Lock()
	defer mu.Unlock()
	return o
}

// socketPair returns a connected pair, the first with SO_PASSCRED set
// before anything is written, as Listen arranges for accepted connections.
func socketPair(t testing.TB) (srv, cli *net.UnixConn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

// splitFrames reads the server's answer after its lines: the error frame
// and, when it is empty, the payload frame, and nothing after.
func splitFrames(b []byte) (errText string, payload []byte, ok bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	l := int(binary.BigEndian.Uint32(b))
	if len(b) < 4+l {
		return "", nil, false
	}
	errText, b = string(b[4:4+l]), b[4+l:]
	if errText != "" {
		return errText, nil, len(b) == 0
	}
	if len(b) < 4 {
		return "", nil, false
	}
	l = int(binary.BigEndian.Uint32(b))
	if len(b) != 4+l {
		return "", nil, false
	}
	return "", b[4:], true
}

func FuzzServerStream(f *testing.F) {
	ch, sh := hello(tClient), hello(tServer)
	req := frame(mp(echoReq{Text: "hi"}))
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	lenOnly := func(l uint32) []byte { return binary.BigEndian.AppendUint32(nil, l) }
	for _, s := range [][]byte{
		nil,
		cat(ch, req),
		cat(ch, frame(nil)),
		cat(ch, lenOnly(0)),
		cat(ch, lenOnly(fuzzMaxFrame)),
		cat(ch, lenOnly(fuzzMaxFrame+1)),
		cat(ch, lenOnly(0xffffffff)),
		cat(ch, req[:len(req)-2]),
		cat(ch, req, []byte{0, 0, 0, 1, 0xc0}),
		cat(ch, req, req),
		cat(ch, frame([]byte("not msgpack at all"))),
		cat(ch, frame(mp([]int{1, 2, 3}))),
		cat(sh, req),
		cat([]byte("sluice test echo client"), req),
		cat(bytes.Repeat([]byte{'i'}, 1000)),
		cat([]byte(tClient.Intent+"\n"+strings.ToUpper(tClient.BuildID)+"\n"), req),
		cat([]byte(tClient.Intent+"\n"+tClient.BuildID[:62]+"\n"), req),
		cat([]byte(busyLine+"\n"), req),
	} {
		f.Add(s, uint16(len(s)))
		f.Add(s, uint16(len(ch)))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		o := serveStream(t, data, int(split))
		if len(o.called) > 1 {
			t.Fatalf("handler ran %d times on one connection", len(o.called))
		}
		if !bytes.HasPrefix(data, ch) {
			// Any other first bytes: refused without a word, nothing read on.
			if len(o.out) != 0 || len(o.called) != 0 {
				t.Fatalf("bad handshake %q answered %q (handler calls %d)", data, o.out, len(o.called))
			}
			if o.err == nil {
				t.Fatalf("bad handshake %q: ServeConn returned nil", data)
			}
			return
		}
		if !bytes.HasPrefix(o.out, sh) {
			t.Fatalf("good handshake, answer %q does not start with the server lines", o.out)
		}
		rest, ans := data[len(ch):], o.out[len(sh):]
		if len(rest) < 4 {
			if len(ans) != 0 || len(o.called) != 0 {
				t.Fatalf("no length prefix, yet answer %q calls %d", ans, len(o.called))
			}
			return
		}
		l := binary.BigEndian.Uint32(rest)
		errText, payload, ok := splitFrames(ans)
		switch {
		case l > fuzzMaxFrame:
			if !ok || !strings.HasPrefix(errText, "bad-request: rpc: frame too large") || len(o.called) != 0 {
				t.Fatalf("length %d over the limit: answer %q calls %d", l, ans, len(o.called))
			}
		case uint64(len(rest)) < 4+uint64(l):
			if len(ans) != 0 || len(o.called) != 0 {
				t.Fatalf("cut frame: answer %q calls %d", ans, len(o.called))
			}
		case uint64(len(rest)) == 4+uint64(l) && checkMsgpack(rest[4:]) != nil:
			if !ok || !strings.HasPrefix(errText, "bad-request: undecodable request frame") || len(o.called) != 0 {
				t.Fatalf("frame of bad msgpack: answer %q calls %d", ans, len(o.called))
			}
		case uint64(len(rest)) == 4+uint64(l):
			if len(o.called) != 1 || !bytes.Equal(o.called[0], rest[4:]) {
				t.Fatalf("exact frame: handler saw %q, want %q", o.called, rest[4:])
			}
			if !ok {
				t.Fatalf("exact frame: malformed answer %q", ans)
			}
			if errText == "" && payload == nil {
				t.Fatalf("exact frame: no payload")
			}
		default:
			// Trailing bytes: refused when they came in the same read as the
			// frame's end (docs/protocol.md section 2); either way the
			// answer is well formed and the handler saw only the frame.
			if !ok {
				t.Fatalf("trailing bytes: malformed answer %q", ans)
			}
			if len(o.called) == 0 && !strings.Contains(errText, "after the request frame") &&
				!strings.HasPrefix(errText, "bad-request: undecodable request frame") {
				t.Fatalf("trailing bytes: refused with %q", errText)
			}
			if len(o.called) == 1 && !bytes.Equal(o.called[0], rest[4:4+l]) {
				t.Fatalf("trailing bytes: handler saw %q, want %q", o.called[0], rest[4:4+l])
			}
		}
	})
}

// fakeServer accepts on a socket and answers every connection with the
// bytes the current fuzz input chose, after reading the whole request.
type fakeServer struct {
	path   string
	l      *net.UnixListener
	mu     sync.Mutex
	answer []byte
}

func newFakeServer(t testing.TB) *fakeServer {
	dir, err := os.MkdirTemp("", "rpc-fuzz-")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{path: filepath.Join(dir, "fake.sock")}
	fs.l, err = net.ListenUnix("unix", &net.UnixAddr{Name: fs.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.l.Close(); os.RemoveAll(dir) })
	go func() {
		want := len(hello(tClient)) + len(frame(mp(echoReq{Text: "hi"})))
		for {
			c, err := fs.l.AcceptUnix()
			if err != nil {
				return
			}
			fs.mu.Lock()
			ans := fs.answer
			fs.mu.Unlock()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.ReadFull(c, make([]byte, want))
			c.Write(ans)
			c.Close()
		}
	}()
	return fs
}

// set is what the server answers from the next connection on; a copy,
// so that the caller may reuse its slice while the server writes.
func (fs *fakeServer) set(answer []byte) {
	fs.mu.Lock()
	fs.answer = bytes.Clone(answer)
	fs.mu.Unlock()
}

func FuzzClientStream(f *testing.F) {
	ch, sh := hello(tClient), hello(tServer)
	okPayload := mp(echoRep{Text: "hi"})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, s := range [][]byte{
		nil,
		cat(sh, frame(nil), frame(okPayload)),
		cat(sh, frame([]byte("denied: no")), nil),
		cat(sh, frame([]byte("no code here"))),
		cat(ch, frame(nil), frame(okPayload)), // our own lines echoed
		cat([]byte(tClient.Intent+"\n"+tServer.BuildID+"\n"), frame(nil), frame(okPayload)),
		cat([]byte(tServer.Intent+"\n"+tClient.BuildID+"\n"), frame(nil), frame(okPayload)),
		cat([]byte(busyLine + "\n")),
		cat(sh, frame(nil)),
		cat(sh, frame(nil), frame(okPayload), []byte{1}),
		cat(sh, []byte{0xff, 0xff, 0xff, 0xff}),
		cat(sh, frame(nil), []byte{0xff, 0xff, 0xff, 0xff}),
		cat(sh, frame(nil), frame([]byte{0xc1})),
	} {
		f.Add(s)
	}
	fs := newFakeServer(f)
	cl := &Client{Path: fs.path, Hello: tClient, Expect: tServer, Timeout: 5 * time.Second}
	f.Fuzz(func(t *testing.T, data []byte) {
		fs.set(data)
		var rep echoRep
		fds, err := cl.Call(context.Background(), echoReq{Text: "hi"}, nil, &rep)
		closeFiles(fds)
		if len(fds) != 0 {
			t.Fatalf("fds out of nowhere: %d", len(fds))
		}
		if errors.Is(err, ErrTimeout) {
			t.Fatalf("client timed out on a server that closed: %v", err)
		}
		if !bytes.HasPrefix(data, sh) {
			want := ErrHandshake
			if bytes.HasPrefix(data, []byte(busyLine+"\n")) {
				want = ErrBusy
			}
			if !errors.Is(err, want) {
				t.Fatalf("server said %q: err = %v, want %v", data, err, want)
			}
			return
		}
		errText, payload, ok := splitFrames(data[len(sh):])
		if err == nil {
			if !ok || errText != "" || payload == nil {
				t.Fatalf("accepted a malformed answer %q", data)
			}
			return
		}
		var re *RemoteError
		if errors.As(err, &re) {
			// Only a whole error frame of 1 to 4096 bytes right after the
			// lines can become a remote error, and it says what it said.
			rest := data[len(sh):]
			if len(rest) < 4 {
				t.Fatalf("remote error %v from %q", err, data)
			}
			l := binary.BigEndian.Uint32(rest)
			if l == 0 || l > 4096 || uint64(len(rest)) < 4+uint64(l) {
				t.Fatalf("remote error %v from %q", err, data)
			}
			if want := parseRemoteError(string(rest[4 : 4+l])); *re != *want {
				t.Fatalf("remote error %+v, frame says %+v", re, want)
			}
		}
	})
}

// FuzzCheckMsgpack holds the frame check to the msgpack decoder's own
// reading of the same bytes: what the check accepts, the decoder skips
// exactly; what the decoder skips exactly and within the depth limit, the
// check accepts.
func FuzzCheckMsgpack(f *testing.F) {
	for _, s := range [][]byte{
		nil, {0xc0}, {0xc1}, hostileClaim, mp(echoReq{Text: "x"}), mp([]any{1, "a", []byte{2}, map[string]any{"k": nil}}),
		{0xd4, 1, 2}, {0xd8, 1}, {0xc9, 0, 0, 0, 1, 7, 9}, {0xdd, 0xff, 0xff, 0xff, 0xff}, {0x91, 0x91, 0x91, 0xc0},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkMsgpack(b)
		r := bytes.NewReader(b)
		d := msgpack.NewDecoder(r)
		serr := d.Skip()
		skipped := serr == nil && r.Len() == 0
		if err == nil && !skipped {
			t.Fatalf("check accepted %x, decoder: %v, %d bytes left", b, serr, r.Len())
		}
		if err != nil && skipped && !strings.Contains(err.Error(), "nested deeper") {
			t.Fatalf("decoder skips %x exactly, check refused: %v", b, err)
		}
	})
}

// FuzzControlMessages: the in-place walk over a recvmsg's control
// messages (nextCmsg, parseOOB) finds what unix.ParseSocketControlMessage,
// ParseUnixRights and ParseUnixCredentials find, and fails where they do.
func FuzzControlMessages(f *testing.F) {
	creds := unix.UnixCredentials(&unix.Ucred{Pid: 7, Uid: 1000, Gid: 1000})
	rights := unix.UnixRights(3, 4, 5)
	f.Add(creds)
	f.Add(rights)
	f.Add(append(append([]byte{}, creds...), rights...))
	f.Add(append(append([]byte{}, rights...), 1, 2, 3))
	f.Add(creds[:20])
	f.Fuzz(func(t *testing.T, oob []byte) {
		// The kernel hands recvmsg an aligned buffer; so does msgReader.
		buf := make([]uint64, (len(oob)+7)/8)
		b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(buf))), len(buf)*8)[:len(oob)]
		copy(b, oob)
		var wantFDs []int
		var wantCreds []Creds
		msgs, werr := unix.ParseSocketControlMessage(b)
		for i := range msgs {
			m := &msgs[i]
			if m.Header.Level != unix.SOL_SOCKET {
				continue
			}
			switch m.Header.Type {
			case unix.SCM_RIGHTS:
				if len(m.Data)%4 != 0 {
					return // x/sys reads past such a message; the kernel sends none
				}
				fds, _ := unix.ParseUnixRights(m)
				wantFDs = append(wantFDs, fds...)
			case unix.SCM_CREDENTIALS:
				uc, err := unix.ParseUnixCredentials(m)
				if err != nil {
					if werr == nil {
						werr = err
					}
					continue
				}
				wantCreds = append(wantCreds, Creds{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid})
			}
		}
		r := &msgReader{wantCreds: true}
		gerr := r.parseOOB(b, true)
		if werr != nil {
			if gerr == nil {
				t.Fatalf("%x: x/sys says %v, parseOOB accepts", oob, werr)
			}
			return
		}
		if gerr == nil && !slices.Equal(r.fds, wantFDs) {
			t.Fatalf("%x: fds %v, x/sys %v", oob, r.fds, wantFDs)
		}
		allSame := len(wantCreds) > 0
		for _, c := range wantCreds {
			allSame = allSame && c == wantCreds[0]
		}
		switch {
		case allSame && (gerr != nil || r.creds != wantCreds[0]):
			t.Fatalf("%x: creds %v %v, x/sys %v", oob, r.creds, gerr, wantCreds)
		case !allSame && gerr == nil:
			t.Fatalf("%x: creds %v accepted, x/sys %v", oob, r.creds, wantCreds)
		}
	})
}
