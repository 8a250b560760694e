package rpc

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hostileClaim is a map whose key claims a 2 GiB string and brings two
// bytes of it.
var hostileClaim = []byte{0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a', 'b'}

// allocatedBy returns the bytes the heap handed out while f ran.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestLengthClaimsCostNothing: msgpack frames whose length claims exceed
// the frame are refused before decoding. Decoded as they were, each one
// made the pooled msgpack decoder allocate for the claim (doubling its
// buffer from call to call: 30 calls of 8 bytes cost ~300 MB).
func TestLengthClaimsCostNothing(t *testing.T) {
	ts := startServer(t, nil)
	const calls = 30
	got := allocatedBy(func() {
		for range calls {
			_, _, err := ts.client().CallRaw(context.Background(), hostileClaim, nil)
			if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), "undecodable") {
				t.Fatalf("err = %v, want bad-request: undecodable", err)
			}
		}
	})
	if got > 16<<20 {
		t.Fatalf("%d hostile 8-byte frames made the process allocate %d MiB", calls, got>>20)
	}
	// The same claims inside a handler's own Decode of a part of a frame.
	got = allocatedBy(func() {
		for range calls {
			c := Call{Body: hostileClaim}
			var v echoReq
			if err := c.Decode(&v); CodeOf(err) != CodeBadRequest {
				t.Fatalf("Decode: %v", err)
			}
		}
	})
	if got > 16<<20 {
		t.Fatalf("%d Decode calls of 8 bytes allocated %d MiB", calls, got>>20)
	}

	// And a client reading such a reply from a hostile server.
	fs := newFakeServer(t)
	fs.set(append(append(hello(tServer), frame(nil)...), frame(hostileClaim)...))
	cl := &Client{Path: fs.path, Hello: tClient, Expect: tServer, Timeout: 5 * time.Second}
	got = allocatedBy(func() {
		for range calls {
			var rep echoRep
			if _, err := cl.Call(context.Background(), echoReq{Text: "hi"}, nil, &rep); err == nil || !strings.Contains(err.Error(), "msgpack") {
				t.Fatalf("reply with a hostile claim: %v", err)
			}
		}
	})
	if got > 16<<20 {
		t.Fatalf("%d hostile 8-byte replies made the client allocate %d MiB", calls, got>>20)
	}
}

func TestCheckMsgpack(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		good bool
	}{
		{mp(echoReq{Text: "x"}), true},
		{mp(map[string]any{"a": []any{1, -1, 1.5, float32(2), "s", []byte{1}, nil, true, map[string]int{"b": 1 << 40}}}), true},
		{[]byte{0xd4, 1, 2}, true},                           // fixext1
		{[]byte{0xc7, 2, 5, 1, 2}, true},                     // ext8
		{[]byte{0xdc, 0, 2, 1, 2}, true},                     // array16 of two
		{nil, false},                                         // nothing
		{[]byte{0xc1}, false},                                // never used
		{[]byte{0xc0, 0xc0}, false},                          // two values
		{hostileClaim, false},                                // string longer than the frame
		{[]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, false},        // 4G items
		{[]byte{0xdf, 0x7f, 0xff, 0xff, 0xff}, false},        // 2G pairs
		{[]byte{0xc6, 0, 0, 0, 3, 1, 2}, false},              // bin32 cut
		{[]byte{0xc7, 2, 5, 1}, false},                       // ext8 cut
		{[]byte{0x81, 0xa1, 'a'}, false},                     // map without its value
		{append([]byte{}, make([]byte, 0)...), false},        // empty
		{[]byte(strings.Repeat("\x91", 40) + "\xc0"), false}, // too deep
		{[]byte(strings.Repeat("\x91", 20) + "\xc0"), true},
		// The boundary, docs/protocol.md §2: 32 arrays and maps one inside
		// another, empty or not, and no more.
		{[]byte(strings.Repeat("\x91", 32) + "\xc0"), true},
		{[]byte(strings.Repeat("\x91", 31) + "\x90"), true},
		{[]byte(strings.Repeat("\x81\xc0", 31) + "\x80"), true},
		{[]byte(strings.Repeat("\x91", 33) + "\xc0"), false},
		{[]byte(strings.Repeat("\x91", 32) + "\x90"), false},
		{[]byte(strings.Repeat("\x81\xc0", 32) + "\x80"), false},
		{[]byte(strings.Repeat("\x91", 31) + "\x81\xc0\x90"), false},
	} {
		if err := checkMsgpack(tc.in); (err == nil) != tc.good {
			t.Errorf("checkMsgpack(%x) = %v, want good=%v", tc.in, err, tc.good)
		}
	}
}

// TestHalfCloseIsTruncation: a client that sends part of its request and
// shuts down its sending side is cut off as truncated. The kernel attaches
// SCM_CREDENTIALS of pid 0 (uid and gid 0 in the reader's namespace) to
// the zero-byte read that reports the end of stream; taken for the
// caller's, they made every such call look like a connection passed to
// another process ("credentials missing or changed"), in the log that an
// admin reads for exactly that attack.
func TestHalfCloseIsTruncation(t *testing.T) {
	full := append(hello(tClient), frame(mp(echoReq{Text: "hi"}))...)
	for _, cut := range []int{len(hello(tClient)) - 5, len(hello(tClient)) + 2, len(full) - 1} {
		sc, cc := socketPair(t)
		srv := &Server{Name: "t", Log: quietLog(), Routes: []Route{{
			Client: tClient, Server: tServer, Allow: Allow{UIDs: []uint32{uint32(os.Getuid())}}, Handle: echoHandler}}}
		cc.Write(full[:cut])
		cc.CloseWrite()
		err := srv.ServeConn(context.Background(), sc)
		if !errors.Is(err, ErrTruncated) || errors.Is(err, ErrCredentials) {
			t.Errorf("cut at %d of %d: %v, want a truncation", cut, len(full), err)
		}
		cc.Close()
	}
}
