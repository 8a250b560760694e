package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
	"sluice/msg"
	"sluice/rpc"
)

// noCall fails any call: the relay must not reach the host's helpers.
type noCall struct{ n atomic.Int32 }

func (c *noCall) CallRaw(context.Context, []byte, []*os.File) ([]byte, []*os.File, error) {
	c.n.Add(1)
	return nil, nil, io.ErrUnexpectedEOF
}

// A stream request must name the framing: an older gateway's unframed
// keys (and its `ssh -tt`) would otherwise be read as frames, or typed
// raw into a shell that now takes frames. Refused before any call.
func TestStreamRequestNeedsFraming(t *testing.T) {
	for _, c := range []struct {
		name    string
		framing int
		refused bool
	}{
		{"no framing (an older gateway)", 0, true},
		{"an unknown framing", 2, true},
		{"v1", msg.RelayFramingV1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			inR, inW, _ := os.Pipe()
			outR, outW, _ := os.Pipe()
			defer inR.Close()
			defer outR.Close()
			calls := &noCall{}
			r := &Relay{Host: "h1", In: inR, Out: outW, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Policy: func() (Caller, error) { return calls, nil }, PtyStore: func() (Caller, error) { return calls, nil }}
			req, _ := msgpack.Marshal(msg.RelayRequest{Service: msg.Policy, Op: msg.OpCreateShellSession, Stream: true, Framing: c.framing,
				HostGrant: &msg.HostGrant{User: "alice", Host: "h1"}})
			inW.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(req))), req...))
			inW.Close()
			done := make(chan error, 1)
			go func() { done <- r.Run(context.Background()); outW.Close() }()
			out, _ := io.ReadAll(outR)
			<-done
			body, ok := bytes.CutPrefix(out, []byte(msg.RelayReady))
			if !ok || len(body) < 4 {
				t.Fatalf("channel got %q", out)
			}
			var rep msg.RelayReply
			if err := msgpack.Unmarshal(body[4:], &rep); err != nil {
				t.Fatal(err)
			}
			if c.refused {
				if !strings.HasPrefix(rep.Error, rpc.CodeBadRequest+": ") || !strings.Contains(rep.Error, "framing") || calls.n.Load() != 0 {
					t.Fatalf("answer %+v after %d calls, want bad-request about framing and no call", rep, calls.n.Load())
				}
				return
			}
			// Taken: the call is made (and fails here).
			if calls.n.Load() != 1 || strings.Contains(rep.Error, "framing") {
				t.Fatalf("answer %+v after %d calls, want the call made", rep, calls.n.Load())
			}
		})
	}
}

// streamed runs r.stream on a fresh pty, with in as the channel's
// gateway → host direction, and returns the session's slave, the
// stream's end, and the channel's host → gateway side.
func streamed(t *testing.T, in io.Reader) (slave *os.File, ended chan error, out *os.File) {
	t.Helper()
	master, slave := rawPty(t)
	t.Cleanup(func() { slave.Close() })
	ended, out = streamOn(t, in, master)
	return slave, ended, out
}

// streamOn runs r.stream on master, which it closes at the test's end.
func streamOn(t *testing.T, in io.Reader, master *os.File) (ended chan error, out *os.File) {
	t.Helper()
	inR, inW, _ := os.Pipe()
	go func() { io.Copy(inW, in); inW.Close() }()
	outR, outW, _ := os.Pipe()
	t.Cleanup(func() { master.Close(); inR.Close(); outR.Close(); outW.Close() })
	st := &store{answer: func(int, context.Context) (msg.PtyViewersReply, error) { return msg.PtyViewersReply{}, nil }}
	r := &Relay{Host: "h1", In: inR, Out: outW, ReportEvery: 20 * time.Millisecond,
		PtyStore: func() (Caller, error) { return st, nil },
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil))}
	ended = make(chan error, 1)
	go func() { ended <- r.stream(context.Background(), "s-1", master) }()
	return ended, outR
}

// Input frames reach the session's pty byte for byte, Ctrl-C and bytes
// that look like frames included; a size frame resizes it; the gateway
// closing at a frame boundary ends the stream.
func TestStreamInputAndSizes(t *testing.T) {
	typed := []byte("echo hi\r\x03\x01\x00\x08" + strings.Repeat("z", 5000))
	ws := unix.Winsize{Row: 50, Col: 132}
	pr, pw := io.Pipe()
	slave, ended, _ := streamed(t, pr)
	go func() {
		pw.Write(termsock.AppendInput(termsock.AppendResize(nil, ws.Col, ws.Row), typed[:3]))
		pw.Write(termsock.AppendInput(nil, typed[3:]))
	}()
	got := make([]byte, len(typed))
	if _, err := io.ReadFull(slave, got); err != nil || !bytes.Equal(got, typed) {
		t.Fatalf("session read %q (%v), want %q", got, err, typed)
	}
	if g, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ); err != nil || g.Row != ws.Row || g.Col != ws.Col {
		t.Fatalf("session size %+v (%v), want %dx%d", g, err, ws.Row, ws.Col)
	}
	ws2 := unix.Winsize{Row: 30, Col: 90}
	pw.Write(termsock.AppendResize(nil, ws2.Col, ws2.Row))
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, _ := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ)
		if g.Row == ws2.Row && g.Col == ws2.Col {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("size %+v, want 30x90", g)
		}
		time.Sleep(5 * time.Millisecond)
	}
	pw.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream goes on after the gateway closed")
	}
}

// A malformed frame ends the stream, and nothing of it or after it
// reaches the session: only the frames before it do.
func TestStreamBadFrameEnds(t *testing.T) {
	for _, c := range []struct {
		name string
		bad  []byte
	}{
		{"unframed keys", []byte("rm -rf /\r")},
		{"unknown type", cat(hdr(7, 3), []byte("id\r"))},
		{"the old relay's input frame", cat(hdr(1, 3), []byte("id\r"))},
		{"oversized input", cat(hdr(termsock.Input, 0xffff), []byte("id\r"))},
		{"empty input", cat(hdr(termsock.Input, 0), termsock.AppendInput(nil, []byte("id\r")))},
		{"size of 0 rows", cat(hdr(termsock.Resize, 4), sizeBody(80, 0), termsock.AppendInput(nil, []byte("id\r")))},
		{"cut short", cat(hdr(termsock.Input, 10), []byte("id\r"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			slave, ended, _ := streamed(t, bytes.NewReader(cat(termsock.AppendInput(nil, []byte("before")), c.bad)))
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("stream goes on after a bad frame")
			}
			unix.SetNonblock(int(slave.Fd()), true)
			b := make([]byte, 256)
			n, _ := slave.Read(b)
			if string(b[:max(n, 0)]) != "before" {
				t.Fatalf("session got %q, want only %q", b[:max(n, 0)], "before")
			}
		})
	}
}

func hdr(t byte, n int) []byte { return []byte{t, byte(n >> 8), byte(n)} }

func sizeBody(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x>>8), byte(x))
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// A recorded session's fd is the recorder's socket, which takes the
// channel's own frames: the recorder reads exactly the bytes the gateway
// sent, keys and sizes in order, none re-encoded; a bad frame ends the
// stream and nothing of it or after it reaches the recorder.
func TestStreamRecordedForwardsFrames(t *testing.T) {
	good := termsock.AppendInput(termsock.AppendResize(nil, 132, 50), []byte("echo hi\r\x03"))
	good = termsock.AppendResize(good, 90, 30)
	good = termsock.AppendInput(good, bytes.Repeat([]byte("z"), termsock.MaxPayload+7))
	for _, c := range []struct {
		name string
		bad  []byte
	}{
		{"then the gateway closes", nil},
		{"then a bad frame", cat(hdr(termsock.Resize, 4), sizeBody(0, 24), termsock.AppendInput(nil, []byte("id\r")))},
	} {
		t.Run(c.name, func(t *testing.T) {
			mine, theirs, err := termsock.Pair()
			if err != nil {
				t.Fatal(err)
			}
			defer mine.Close()
			ended, _ := streamOn(t, bytes.NewReader(cat(good, c.bad)), theirs)
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("stream goes on")
			}
			// Every write the stream made is in the socket by now: its
			// input ended before it did.
			got := make([]byte, len(good)+64)
			mine.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.ReadAtLeast(mine, got, len(good))
			if err != nil || !bytes.Equal(got[:n], good) {
				t.Fatalf("recorder read %x (%v), want %x", got[:n], err, good)
			}
			mine.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if n, err := mine.Read(got); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("recorder read %q (%v) after the frames", got[:n], err)
			}
		})
	}
}
