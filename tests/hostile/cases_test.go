package hostile

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// hcase is one attack: run does it and returns what the server sent;
// check judges the parsed answer against the exact expected outcome.
type hcase struct {
	name  string
	run   func(t *testing.T, tg *target) Answer
	check func(t *testing.T, tg *target, r Reply, a Answer)
	// skip, when set, says why this case does not apply to tg.
	skip func(tg *target) string
}

// send writes req, half-closes and reads the answer.
func send(req func(tg *target) []byte) func(t *testing.T, tg *target) Answer {
	return func(t *testing.T, tg *target) Answer {
		a, err := Exchange(tg.sock, req(tg))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
}

// closed: refused without a word (docs/protocol.md section 1).
func closed(t *testing.T, tg *target, r Reply, a Answer) {
	t.Helper()
	if r.Kind != Closed || len(a.FDs) != 0 {
		t.Fatalf("got %v, want the connection closed without a byte", r)
	}
	if a.TimedOut {
		t.Fatal("the server did not close the connection")
	}
}

// errorFrame wants the server's lines and exactly this error text; a text
// ending in "…" is a prefix.
func errorFrame(text func(tg *target) string) func(t *testing.T, tg *target, r Reply, a Answer) {
	return func(t *testing.T, tg *target, r Reply, a Answer) {
		t.Helper()
		want := text(tg)
		if r.Kind != ErrorKind || r.Server != tg.server {
			t.Fatalf("got %v from %+v, want error frame %q from %+v", r, r.Server, want, tg.server)
		}
		if p, ok := strings.CutSuffix(want, "…"); ok {
			if !strings.HasPrefix(r.Text, p) {
				t.Fatalf("error frame %q, want it to start with %q", r.Text, p)
			}
		} else if r.Text != want {
			t.Fatalf("error frame %q, want %q", r.Text, want)
		}
		if len(a.FDs) != 0 {
			t.Fatalf("%d fds with an error", len(a.FDs))
		}
	}
}

func fixed(s string) func(*target) string { return func(*target) string { return s } }

// hostileClaim is a map whose first key claims a 2 GiB string.
var hostileClaim = []byte{0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a', 'b'}

// padTo returns body, a msgpack map, with an extra "pad" entry making it
// exactly n bytes. msg.Request ignores the unknown key, so the call means
// what body meant.
func padTo(t *testing.T, body []byte, n int) []byte {
	t.Helper()
	var m map[string]msgpack.RawMessage
	if err := msgpack.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	// The entry costs the key, the string header (1 to 5 bytes) and the
	// string; try the few lengths around the remainder.
	for l := max(0, n-len(body)-4-5); l <= n-len(body); l++ {
		m["pad"] = mp(strings.Repeat("p", l))
		if b := mp(m); len(b) == n {
			return b
		}
	}
	t.Fatalf("cannot pad %d bytes to %d", len(body), n)
	return nil
}

// pipes returns n pipe fds and closes them when the test ends.
// callWithFDs sends req with fds over SCM_RIGHTS and returns the answer,
// once the server process holds no more fds than before the call: every
// one it was passed is closed, whatever it answered.
func callWithFDs(t *testing.T, tg *target, req []byte, fds []int) Answer {
	t.Helper()
	before, err := CountFDs(tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(tg.sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFDs(req, fds); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	a := c.ReadAll()
	c.Close() // our end counts too when the server is this process
	var after int
	if !settle(func() bool { after, _ = CountFDs(tg.pid); return after <= before }) {
		t.Fatalf("server process has %d fds after the call, %d before", after, before)
	}
	return a
}

func pipes(t *testing.T, n int) []int {
	t.Helper()
	var fds []int
	for len(fds) < n {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, p[0], p[1])
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return fds[:n]
}

// settle polls cond until it holds or tries run out: the server closes
// its copies of our fds just after it closes the connection.
func settle(cond func() bool) bool {
	for range 500 {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func cases() []hcase {
	lines := func(tg *target) []byte { return tg.client.Lines() }
	return []hcase{
		{name: "length prefix 0",
			run:   send(func(tg *target) []byte { return Cat(lines(tg), Len(0)) }),
			check: errorFrame(fixed("bad-request: undecodable request frame: not well-formed msgpack: truncated"))},
		{name: "length prefix at the limit",
			run: func(t *testing.T, tg *target) Answer {
				return send(func(tg *target) []byte { return Cat(lines(tg), Frame(padTo(t, tg.good, tg.maxFrame))) })(t, tg)
			},
			check: func(t *testing.T, tg *target, r Reply, a Answer) {
				if err := tg.checkGood(r, a); err != nil {
					t.Fatalf("a good call of exactly %d bytes: %v", tg.maxFrame, err)
				}
			}},
		{name: "length prefix of limit+1",
			run: send(func(tg *target) []byte { return Cat(lines(tg), Len(uint32(tg.maxFrame+1))) }),
			check: errorFrame(func(tg *target) string {
				return fmt.Sprintf("bad-request: rpc: frame too large: %d bytes, limit %d", tg.maxFrame+1, tg.maxFrame)
			})},
		{name: "length prefix of 4 GiB",
			run: send(func(tg *target) []byte { return Cat(lines(tg), Len(0xffffffff)) }),
			check: errorFrame(func(tg *target) string {
				return fmt.Sprintf("bad-request: rpc: frame too large: 4294967295 bytes, limit %d", tg.maxFrame)
			})},
		{name: "frame cut in the middle",
			run: send(func(tg *target) []byte { f := Frame(tg.good); return Cat(lines(tg), f[:len(f)/2]) }),
			check: func(t *testing.T, tg *target, r Reply, a Answer) {
				// The server sent its lines while waiting for the rest,
				// then closed on the cut without an answer.
				if r.Kind != HelloOnly || r.Server != tg.server || a.TimedOut {
					t.Fatalf("got %v, want the server lines and then the close", r)
				}
			}},
		{name: "bytes after the request",
			run:   send(func(tg *target) []byte { return Cat(tg.goodCall(), []byte{0xc0, 1, 2, 3, 4}) }),
			check: errorFrame(fixed("bad-request: 5 bytes after the request frame"))},
		{name: "second request in the same write",
			run: send(func(tg *target) []byte { return Cat(tg.goodCall(), Frame(tg.good)) }),
			check: func(t *testing.T, tg *target, r Reply, a Answer) {
				// The count is what the server had read by then: some or
				// all of the second frame.
				var n int
				_, err := fmt.Sscanf(r.Text, "bad-request: %d bytes after the request frame", &n)
				if r.Kind != ErrorKind || r.Server != tg.server || err != nil || n < 1 || n > len(Frame(tg.good)) {
					t.Fatalf("got %v, want bad-request: 1 to %d bytes after the request frame", r, len(Frame(tg.good)))
				}
			}},
		{name: "second request after the answer",
			run: func(t *testing.T, tg *target) Answer {
				c, err := Dial(tg.sock)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := c.Write(tg.goodCall()); err != nil {
					t.Fatal(err)
				}
				a := c.ReadAll() // the server answers and closes
				if err := c.Write(tg.goodCall()); err == nil {
					if more := c.ReadAll(); len(more.Raw) != 0 {
						t.Fatalf("second request on a used connection answered %q", more.Raw)
					}
				}
				return a
			},
			check: func(t *testing.T, tg *target, r Reply, a Answer) {
				if err := tg.checkGood(r, a); err != nil {
					t.Fatalf("first request: %v", err)
				}
			}},
		{name: "non-msgpack bytes",
			run: send(func(tg *target) []byte {
				return Cat(lines(tg), Frame([]byte("GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")))
			}),
			check: errorFrame(fixed("bad-request: undecodable request frame: not well-formed msgpack: 31 bytes after the value"))},
		{name: "msgpack of the wrong type",
			run:   send(func(tg *target) []byte { return Cat(lines(tg), Frame(mp([]int{1, 2, 3}))) }),
			check: errorFrame(fixed("bad-request: undecodable *msg.Request: …"))},
		{name: "msgpack claiming a 2 GiB string",
			run: send(func(tg *target) []byte { return Cat(lines(tg), Frame(hostileClaim)) }),
			check: errorFrame(fixed("bad-request: undecodable request frame: not well-formed msgpack: " +
				"2147483647 bytes claimed, 2 left"))},
		{name: "intent of another socket",
			run:   send(func(tg *target) []byte { return Cat(tg.other.Lines(), Frame(tg.good)) }),
			check: closed},
		{name: "intent without newline",
			run:   send(func(tg *target) []byte { return []byte(tg.client.Intent) }),
			check: closed},
		{name: "intent without newline, build ID after it",
			run: send(func(tg *target) []byte {
				return Cat([]byte(tg.client.Intent+tg.client.BuildID+"\n"), Frame(tg.good))
			}),
			check: closed},
		{name: "100 KiB of intent",
			run:   send(func(tg *target) []byte { return bytes.Repeat([]byte("sluice "), 100<<10/7) }),
			check: closed},
		{name: "the server's own lines echoed",
			run:   send(func(tg *target) []byte { return Cat(tg.server.Lines(), Frame(tg.good)) }),
			check: closed},
		{name: "build ID one digit short",
			run: send(func(tg *target) []byte {
				return Cat([]byte(tg.client.Intent+"\n"+tg.client.BuildID[:63]+"\n"), Frame(tg.good))
			}),
			check: closed},
		{name: "build ID one digit long",
			run: send(func(tg *target) []byte {
				return Cat([]byte(tg.client.Intent+"\n"+tg.client.BuildID+"0\n"), Frame(tg.good))
			}),
			check: closed},
		{name: "build ID in upper case",
			run: send(func(tg *target) []byte {
				return Cat([]byte(tg.client.Intent+"\n"+strings.ToUpper(tg.client.BuildID)+"\n"), Frame(tg.good))
			}),
			check: closed},
		{name: "build ID of another binary",
			run: send(func(tg *target) []byte {
				return Cat(Hello{tg.client.Intent, tg.other.BuildID}.Lines(), Frame(tg.good))
			}),
			check: closed},
		{name: "silent client",
			run: func(t *testing.T, tg *target) Answer {
				c, err := Dial(tg.sock)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Timeout(tg.timeout + 10*time.Second)
				return c.ReadAll()
			},
			check: closed},
		{name: "one byte a second",
			run: func(t *testing.T, tg *target) Answer {
				c, err := Dial(tg.sock)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Timeout(tg.timeout + 10*time.Second)
				done := make(chan struct{})
				stopped := make(chan struct{})
				go func() {
					defer close(stopped)
					for _, b := range tg.goodCall() {
						if c.Write([]byte{b}) != nil {
							return
						}
						select {
						case <-done:
							return
						case <-time.After(time.Second):
						}
					}
				}()
				a := c.ReadAll()
				close(done)
				<-stopped
				return a
			},
			check: closed},
		{name: "200 fds to a call that takes fewer",
			run: func(t *testing.T, tg *target) Answer {
				return callWithFDs(t, tg, tg.goodCall(), pipes(t, 200))
			},
			check: errorFrame(func(tg *target) string {
				return fmt.Sprintf("bad-request: 200 fds received, call takes at most %d", tg.maxFDs)
			})},
		{name: "a pipe where a pty master is expected",
			skip: func(tg *target) string {
				if tg.ptyPut == nil {
					return "no call of this socket takes a pty"
				}
				return ""
			},
			run: func(t *testing.T, tg *target) Answer {
				hello, _ := tg.putHellos()
				if tg.pid == "self" {
					hello = inPtyClient
				}
				return callWithFDs(t, tg, Cat(hello.Lines(), Frame(tg.ptyPut)), pipes(t, 1))
			},
			check: func(t *testing.T, tg *target, r Reply, a Answer) {
				_, want := tg.putHellos()
				if tg.pid == "self" {
					want = inPtyServer
				}
				if r.Kind != ErrorKind || r.Server != want || !strings.HasPrefix(r.Text, tg.ptyWrong) ||
					!strings.Contains(r.Text, "not a pty master") {
					t.Fatalf("got %v, want an error frame %q… about a pty", r, tg.ptyWrong)
				}
			}},
		{name: "a caller with a forbidden uid",
			run: func(t *testing.T, tg *target) Answer {
				res := asUser(t, 65534, "call", "SOCK="+tg.sock, "REQ="+hex.EncodeToString(tg.goodCall()))
				if res.Err != "" {
					t.Fatal(res.Err)
				}
				return Answer{Raw: rebuild(res.Reply)}
			},
			check: errorFrame(func(tg *target) string {
				return fmt.Sprintf("forbidden: uid 65534 gid 65534 may not call %q", tg.client.Intent)
			})},
		{name: "a non-root caller forging SCM_CREDENTIALS of uid 0",
			run: func(t *testing.T, tg *target) Answer {
				res := asUser(t, 65534, "forge", "SOCK="+tg.sock, "REQ="+hex.EncodeToString(tg.goodCall()),
					"FORGE_PID=self", "FORGE_UID=0")
				if !strings.Contains(res.Err, "operation not permitted") {
					t.Fatalf("forged uid 0: sendmsg said %q (reply %v), want EPERM from the kernel", res.Err, res.Reply)
				}
				return Answer{}
			},
			check: closed},
		{name: "a non-root caller forging another pid",
			run: func(t *testing.T, tg *target) Answer {
				res := asUser(t, 65534, "forge", "SOCK="+tg.sock, "REQ="+hex.EncodeToString(tg.goodCall()),
					"FORGE_PID="+strconv.Itoa(os.Getpid()), "FORGE_UID=65534")
				if !strings.Contains(res.Err, "operation not permitted") {
					t.Fatalf("forged pid: sendmsg said %q (reply %v), want EPERM from the kernel", res.Err, res.Reply)
				}
				return Answer{}
			},
			check: closed},
		{name: "root's forged credentials do not match SO_PEERCRED",
			run: func(t *testing.T, tg *target) Answer {
				// Root may attach any credentials; the server still sees
				// that they are not those of the process that connected.
				c, err := Dial(tg.sock)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: 65534, Gid: 65534})
				if err := c.Write(tg.goodCall(), oob...); err != nil {
					t.Fatalf("root's sendmsg with other credentials: %v", err)
				}
				c.CloseWrite()
				return c.ReadAll()
			},
			check: closed},
	}
}

// rebuild turns a child's parsed reply back into bytes for the checks.
func rebuild(r Reply) []byte {
	switch r.Kind {
	case Closed:
		return nil
	case Busy:
		return []byte(BusyLine)
	case HelloOnly:
		return r.Server.Lines()
	case ErrorKind:
		return Cat(r.Server.Lines(), Frame([]byte(r.Text)))
	case OK:
		return Cat(r.Server.Lines(), Frame(nil), Frame(r.Payload))
	}
	return []byte("malformed: " + r.Why)
}

// runCases runs the whole table against tg; after every case the server
// must serve a good call.
func runCases(t *testing.T, tg *target, logOf func() string) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			if c.skip != nil {
				if why := c.skip(tg); why != "" {
					t.Skip(why)
				}
			}
			if logOf != nil {
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("%s log:\n%s", tg.name, logOf())
					}
				})
			}
			a := c.run(t, tg)
			defer a.CloseFDs()
			c.check(t, tg, a.Parse(), a)
			tg.mustServeGood(t)
		})
	}
}

func TestInProcess(t *testing.T) {
	runCases(t, inProcess(t, nil), nil)
}

func TestHelpers(t *testing.T) {
	s := helpers(t)
	for _, tg := range helperTargetList(t) {
		t.Run(tg.name, func(t *testing.T) {
			runCases(t, tg, func() string { return s.logOf(tg.sock) })
		})
	}
}
