package e2e

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
	"sluice/msg"
)

// A compromised frontend on a recorded session's own socket: a process
// with the frontend's uid and build IDs takes the session's fd from
// ptystore (pty-get, with a grant of the session's owner, as the frontend
// holds one) and writes to it what the real frontend never would. The
// recording must stay valid (`recordings verify`, `asciinema cat`),
// nothing may reach the shell without being recorded (bob's rule is
// `record input`, so every byte the shell is given is an i event), and
// the session must end, or go on, as docs/recording.md says.

// childThen runs steps, separated by commas, on f, the session's socket
// as ptystore hands it out, and says what each did:
//
//	w:HEX      write the bytes
//	over:HEX   an input frame header claiming 65535 bytes, then HEX repeated to fill it
//	flood:N    N resize frames, each a change (81x24, 82x24, ...), then 80x24
//	shut:rd    shutdown(SHUT_RD); shut:wr likewise
func childThen(f *os.File, steps string) string {
	var out []string
	for _, step := range strings.Split(steps, ",") {
		verb, arg, _ := strings.Cut(step, ":")
		var err error
		switch verb {
		case "w", "over":
			var b []byte
			if b, err = hex.DecodeString(arg); err != nil {
				break
			}
			if verb == "over" {
				p := make([]byte, 0, 0xffff)
				for len(p) < 0xffff {
					p = append(p, b...)
				}
				b = append([]byte{termsock.Input, 0xff, 0xff}, p[:0xffff]...)
			}
			_, err = f.Write(b)
		case "flood":
			n, _ := strconv.Atoi(arg)
			var b []byte
			for i := range n {
				b = termsock.AppendResize(b, uint16(81+i%2), 24)
			}
			b = termsock.AppendResize(b, 80, 24)
			_, err = f.Write(b)
		case "shut":
			how := unix.SHUT_WR
			if arg == "rd" {
				how = unix.SHUT_RD
			}
			err = unix.Shutdown(int(f.Fd()), how)
		case "hold":
			// Keep the fd until the parent creates file arg (unput_test.go).
			deadline := time.Now().Add(time.Minute)
			for _, err = os.Stat(arg); err != nil && time.Now().Before(deadline); _, err = os.Stat(arg) {
				time.Sleep(10 * time.Millisecond)
			}
		default:
			err = fmt.Errorf("unknown step")
		}
		if err != nil {
			out = append(out, verb+": "+err.Error())
		} else {
			out = append(out, verb+": ok")
		}
	}
	return strings.Join(out, "; ")
}

// onSocket gets session id's socket from ptystore as the frontend and runs
// steps on it (childThen).
func onSocket(t *testing.T, g msg.Grant, id, steps string) string {
	t.Helper()
	fds, code, then := asFrontendThen(t, msg.ProtoWebToPtyStore, msg.OpPtyGet, msg.PtyGet{Grant: g, ID: id}, nil, steps)
	if code != "" || fds != 1 {
		t.Fatalf("pty-get of %s as the frontend: code %q, %d fds", id, code, fds)
	}
	return then
}

func hexOf(s string) string { return hex.EncodeToString([]byte(s)) }

// untilExit reads the page's messages until the session's exit and
// returns every byte the page got.
func (c *client) untilExit() []byte {
	c.t.Helper()
	for {
		if m := c.next(); m["t"] == "exit" {
			break
		}
	}
	c.drain()
	return c.all.Bytes()
}

func TestRecordingHostileSocket(t *testing.T) {
	recording(t)
	// The marker files a command would make if the bytes reached a
	// shell: evidence that does not depend on what the recording says.
	marker := func(name string) (path, typed string) {
		path = fmt.Sprintf("/tmp/sluice-e2e-%s-%d", name, os.Getpid())
		os.Remove(path)
		t.Cleanup(func() { os.Remove(path) })
		return path, "touch " + path + "\r"
	}
	start := func(t *testing.T) (*client, string, msg.Grant) {
		c := connect(t)
		c.signIn(bob)
		id := sessionID(c.create(80, 24))
		c.typeText("echo up-$((1+1))\r")
		c.until("up-2")
		return c, id, directGrant(t, bob)
	}
	// notInShell: the bytes reached no shell and no i event.
	notInShell := func(t *testing.T, rec cast, path, typed string) {
		t.Helper()
		time.Sleep(300 * time.Millisecond) // a shell given the line would have run it by now
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%q reached the shell", typed)
		}
		if strings.Contains(rec.i, "touch") {
			t.Errorf("i events hold %q", rec.i)
		}
	}

	for _, tc := range []struct {
		name  string
		steps func(typed string) string
	}{
		// Raw bytes, as to a pty master: not a frame ('t' is no type).
		{"raw", func(typed string) string { return "w:" + hexOf(typed) }},
		// A valid frame first (it is the owner's session: typing is the
		// frontend's job, and it is recorded), then a header claiming
		// more than a frame may hold, payload and all.
		{"oversized", func(typed string) string {
			return "w:" + hex.EncodeToString(termsock.AppendInput(nil, []byte("echo framed\r"))) + ",over:" + hexOf(typed)
		}},
		// A resize frame of the wrong length, then the line as raw bytes.
		{"garbled", func(typed string) string { return "w:" + hexOf("r\x00\x05xxxxx") + hexOf(typed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, id, g := start(t)
			path, typed := marker(tc.name)
			if then := onSocket(t, g, id, tc.steps(typed)); strings.Contains(then, "w: ") && !strings.Contains(then, "w: ok") {
				t.Logf("child: %s", then)
			}
			page := c.untilExit()
			if !strings.Contains(string(page), "[sluice: the terminal sent an invalid frame; this session is ended]") {
				t.Errorf("the page was not told why the session ended: %q", page)
			}
			verify(t, id, msg.RecIntact)
			rec := export(t, id)
			notInShell(t, rec, path, typed)
			// The page got the o events, up to the recorder's own message
			// (not the shell's output, so not recorded). Bytes are
			// recorded before they are passed on, so at this cut the
			// recording may hold a last burst the page never got, never
			// the other way round.
			got, _, _ := strings.Cut(string(page), "\r\n[sluice: ")
			if !strings.HasPrefix(rec.o, got) || !strings.Contains(rec.o, "up-2") {
				t.Errorf("the page got %q, not a prefix of the o events %q", page, rec.o)
			}
			if tc.name == "oversized" && !strings.Contains(rec.i, "echo framed\r") {
				t.Errorf("the valid frame before the bad one was not recorded: i %q", rec.i)
			}
		})
	}

	// A flood of resizes: each one is applied and recorded, the session
	// goes on, and typing after it works.
	t.Run("resize-flood", func(t *testing.T) {
		const n = 3000
		c, id, g := start(t)
		steps := fmt.Sprintf("flood:%d,w:%s", n, hex.EncodeToString(termsock.AppendInput(nil, []byte("echo alive-$((2+3))\r"))))
		if then := onSocket(t, g, id, steps); then != "flood: ok; w: ok" {
			t.Fatalf("child: %s", then)
		}
		c.until("alive-5")
		c.exit()
		verify(t, id, msg.RecIntact)
		rec := export(t, id)
		// The page's own first size may be recorded before the flood.
		r := rec.r
		if len(r) > 0 && r[0] == "80x24" {
			r = r[1:]
		}
		if len(r) != n+1 || r[0] != "81x24" || r[n] != "80x24" {
			t.Errorf("%d r events (%v ... %v), want %d from 81x24 to 80x24", len(r), r[:min(3, len(r))], r[max(0, len(r)-2):], n+1)
		}
		if !strings.Contains(rec.i, "echo alive-$((2+3))\r") {
			t.Errorf("input after the flood not recorded: %q", rec.i)
		}
	})

	// Shutting the socket down is ending the session: for writing at
	// once (the recorder sees it, POLLRDHUP), for reading at the shell's
	// next output, which is recorded but reaches no one.
	t.Run("shut-wr", func(t *testing.T) {
		c, id, g := start(t)
		if then := onSocket(t, g, id, "shut:wr"); then != "shut: ok" {
			t.Fatalf("child: %s", then)
		}
		c.untilExit()
		verify(t, id, msg.RecIntact)
		export(t, id)
	})
	t.Run("shut-rd", func(t *testing.T) {
		c, id, g := start(t)
		in := termsock.AppendInput(nil, []byte("echo gone-$((3+4))\r"))
		if then := onSocket(t, g, id, "shut:rd,w:"+hex.EncodeToString(in)); then != "shut: ok; w: ok" {
			t.Fatalf("child: %s", then)
		}
		page := c.untilExit()
		verify(t, id, msg.RecIntact)
		rec := export(t, id)
		// Whether the input got in before the session ended depends on
		// who is first (the frontend's hub ends the page at the EOF the
		// shutdown gives it); if the shell ran it, it is recorded.
		if strings.Contains(rec.o, "gone-7") && !strings.Contains(rec.i, "echo gone-$((3+4))\r") {
			t.Errorf("the shell ran input that was not recorded: i %q", rec.i)
		}
		if strings.Contains(string(page), "gone-7") {
			t.Errorf("output after SHUT_RD reached the page")
		}
	})
}
