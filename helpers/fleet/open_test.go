package fleet

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
	"sluice/msg"
)

// This test binary plays ssh and the host's relay for Open when the fleet
// helper runs it as its ssh (its command line starts "-F /dev/null"):
// HOME is the fleet directory, whose relay-mode file says which relay to
// be, and whose typed file receives every byte of input after the answer.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-F" && os.Args[2] == "/dev/null" {
		os.Exit(fakeRelay(os.Getenv("HOME")))
	}
	os.Exit(m.Run())
}

func fakeRelay(dir string) int {
	mode, _ := os.ReadFile(filepath.Join(dir, "relay-mode"))
	// A gateway that closed its end makes our output's write fail
	// (EPIPE on a socket); what we were sent is still to be recorded.
	signal.Ignore(syscall.SIGPIPE)
	io.WriteString(os.Stdout, msg.RelayReady)
	var n [4]byte
	if _, err := io.ReadFull(os.Stdin, n[:]); err != nil {
		return 1
	}
	b := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(os.Stdin, b); err != nil {
		return 1
	}
	var req msg.RelayRequest
	if msgpack.Unmarshal(b, &req) != nil || !req.Stream || req.Framing != msg.RelayFramingV1 || !strings.Contains(strings.Join(os.Args, " "), " -T ") {
		return 3
	}
	payload, _ := msgpack.Marshal(msg.FleetOpenReply{Session: msg.SessionInfo{ID: "s-1"}, Mode: msg.ModeOwner})
	rep := msg.RelayReply{Payload: payload}
	if string(mode) == "framed" {
		rep.Framing = msg.RelayFramingV1
	}
	out, _ := msgpack.Marshal(rep)
	os.Stdout.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(out))), out...))
	os.Stdout.WriteString("output-from-the-host")
	typed, _ := io.ReadAll(os.Stdin)
	// Renamed into place: the test reads "typed" as soon as it exists,
	// and a file being written can be read empty.
	tmp := filepath.Join(dir, "typed.tmp")
	if os.WriteFile(tmp, typed, 0o644) != nil || os.Rename(tmp, filepath.Join(dir, "typed")) != nil {
		return 4
	}
	return 0
}

// Open against a relay that frames its input and one that does not (an
// older sluice-relay): the first gets the keys and sizes as frames and
// its output reaches the frontend's end of the socket raw; the second
// gets no byte of input and the caller a clear failure. Both ends of the
// stream end it: the frontend's end of input is ssh's, and the relay's
// end is the frontend's EOF.
func TestOpen(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"framed", "unframed (an older relay)"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "relay-mode"), []byte(strings.Fields(mode)[0]), 0o644)
			if err := (Hosts{Hosts: []msg.FleetHost{{Name: "h1", Address: "127.0.0.1", Port: 22, User: "sluice-relay"}}}).Save(dir); err != nil {
				t.Fatal(err)
			}
			f := &Fleet{Dir: dir, SSH: self, Timeout: 10 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			rep, master, err := f.Open(context.Background(), msg.FleetCall{Host: "h1", Op: msg.OpPtyGet, Rows: 30, Cols: 100})
			typed := func() []byte {
				for range 500 {
					if b, err := os.ReadFile(filepath.Join(dir, "typed")); err == nil {
						return b
					}
					time.Sleep(10 * time.Millisecond)
				}
				t.Fatal("the fake relay did not end")
				return nil
			}
			if mode != "framed" {
				if err == nil || !strings.Contains(err.Error(), "does not frame its input") {
					t.Fatalf("open: %v, want a failure naming the framing", err)
				}
				if b := typed(); len(b) != 0 {
					t.Fatalf("an unframed relay was sent %q", b)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if rep.Host != "h1" || rep.Session.ID != "s-1" {
				t.Fatalf("open reply %+v", rep)
			}
			buf := make([]byte, 64)
			var got []byte
			for !bytes.Contains(got, []byte("output-from-the-host")) {
				n, err := master.Read(buf)
				if err != nil {
					t.Fatalf("master: %q, %v", got, err)
				}
				got = append(got, buf[:n]...)
			}
			if !termsock.Is(master) {
				t.Fatal("the stream's fd is not a socket the frontend frames for")
			}
			// The frontend frames what the page types (frontend/hub/term.go);
			// closing its end is ssh's end of input.
			if _, err := master.Write(termsock.AppendInput(nil, []byte("keys\x03"))); err != nil {
				t.Fatal(err)
			}
			rc, _ := master.SyscallConn()
			rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
			want := termsock.AppendInput(termsock.AppendResize(nil, 100, 30), []byte("keys\x03"))
			if b := typed(); !bytes.Equal(b, want) {
				t.Fatalf("the relay was sent %x, want %x", b, want)
			}
			// The host's side ended: the frontend reads the end.
			master.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, err := master.Read(buf); err != nil {
					if err != io.EOF {
						t.Fatalf("after the relay ended: %v, want EOF", err)
					}
					break
				}
			}
			master.Close()
		})
	}
}
