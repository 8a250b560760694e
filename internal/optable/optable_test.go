package optable_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

type echoArgs struct {
	Word string `msgpack:"word"`
	N    int    `msgpack:"n,omitempty"`
}

type echoReply struct {
	Word string `msgpack:"word"`
}

// table is a two-op table whose handlers count their calls, so a test can
// tell a refusal before the handler from one inside it.
func table(t *testing.T, calls *int) *optable.Table {
	t.Helper()
	tb := &optable.Table{
		Protocol: "test to test",
		Ops: []optable.Entry{
			optable.Op(msg.OpPtyList, func(_ context.Context, _ *rpc.Call, a echoArgs) (echoReply, error) {
				*calls++
				return echoReply{Word: a.Word}, nil
			}),
			optable.OpFDs(msg.OpPtyPut, 1, 1, func(_ context.Context, c *rpc.Call, _ optable.None) (echoReply, []*os.File, error) {
				*calls++
				return echoReply{Word: "kept"}, c.FDs, nil
			}),
			optable.OpFDs(msg.OpPtyGet, 0, 1, func(_ context.Context, _ *rpc.Call, _ optable.None) (echoReply, []*os.File, error) {
				*calls++
				r1, w1, _ := os.Pipe()
				r2, w2, _ := os.Pipe()
				w1.Close()
				w2.Close()
				return echoReply{}, []*os.File{r1, r2}, nil // one more than the entry allows
			}),
			optable.Refused(msg.OpPtyRecheck, "is served to admins only"),
		},
	}
	if err := tb.Check(); err != nil {
		t.Fatal(err)
	}
	return tb
}

func body(t *testing.T, op string, args []byte) []byte {
	t.Helper()
	b, err := msgpack.Marshal(msg.Request{Op: op, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pipe(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r
}

func closed(f *os.File) bool {
	_, err := f.Stat()
	return errors.Is(err, os.ErrClosed)
}

func TestHandle(t *testing.T) {
	good, _ := msgpack.Marshal(echoArgs{Word: "hi"})
	// A str header claiming 2 GiB in a 6-byte value: the strict check
	// refuses it before the msgpack decoder allocates for it.
	huge := []byte{0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'}
	cases := []struct {
		name      string
		op        string
		args      []byte
		fds       int
		wantCode  string
		wantText  string
		wantCalls int
		wantLabel string
	}{
		{"served", msg.OpPtyList, good, 0, "", "", 1, msg.OpPtyList},
		{"unknown op", "pty-frobnicate", good, 1, rpc.CodeBadRequest, `unknown op "pty-frobnicate" on test to test`, 0, "unknown"},
		{"fds on an op that takes none", msg.OpPtyList, good, 1, rpc.CodeBadRequest, "pty-list takes no fds, got 1", 0, msg.OpPtyList},
		{"no fd on an op that takes one", msg.OpPtyPut, nil, 0, rpc.CodeBadRequest, "pty-put takes exactly one fd, got 0", 0, msg.OpPtyPut},
		{"two fds on an op that takes one", msg.OpPtyPut, nil, 2, rpc.CodeBadRequest, "pty-put takes exactly one fd, got 2", 0, msg.OpPtyPut},
		// Args ride inline in the envelope, so the envelope's check catches them.
		{"args not msgpack", msg.OpPtyList, huge, 1, rpc.CodeBadRequest, "undecodable *msg.Request", 0, ""},
		{"args of the wrong shape", msg.OpPtyList, []byte{0x93, 1, 2, 3}, 0, rpc.CodeBadRequest, "undecodable", 0, msg.OpPtyList},
		{"None args are not read", msg.OpPtyPut, []byte{0x93, 1, 2, 3}, 1, "", "", 1, msg.OpPtyPut},
		{"more fds out than the entry allows", msg.OpPtyGet, nil, 0, "", "gave 2 fds", 1, msg.OpPtyGet},
		{"refused op", msg.OpPtyRecheck, nil, 0, rpc.CodeForbidden, "is served to admins only", 0, msg.OpPtyRecheck},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			tb := table(t, &calls)
			var fds []*os.File
			for range tc.fds {
				fds = append(fds, pipe(t))
			}
			c := &rpc.Call{Body: body(t, tc.op, tc.args), FDs: fds}
			rep, err := tb.Handle(context.Background(), c)
			if calls != tc.wantCalls {
				t.Errorf("handler ran %d times, want %d", calls, tc.wantCalls)
			}
			if c.Label != tc.wantLabel {
				t.Errorf("label %q, want %q", c.Label, tc.wantLabel)
			}
			if tc.wantText == "" {
				if err != nil {
					t.Fatalf("err %v", err)
				}
				closeAll(rep.FDs)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("err %v, want one saying %q", err, tc.wantText)
			}
			if got := rpc.CodeOf(err); got != tc.wantCode {
				t.Errorf("code %q, want %q", got, tc.wantCode)
			}
			if len(rep.FDs) != 0 {
				t.Errorf("a refusal carries %d fds", len(rep.FDs))
			}
			for i, f := range fds {
				if !closed(f) {
					t.Errorf("fd %d of a refused call left open", i)
				}
			}
		})
	}
}

func TestGuard(t *testing.T) {
	calls := 0
	tb := table(t, &calls)
	tb.Guard = func(_ context.Context, c *rpc.Call) error {
		if c.Peer.UID != 0 {
			return rpc.Errorf(rpc.CodeForbidden, "uid %d is not root", c.Peer.UID)
		}
		return nil
	}
	f := pipe(t)
	c := &rpc.Call{Body: body(t, msg.OpPtyPut, nil), FDs: []*os.File{f}}
	c.Peer.UID = 1000
	_, err := tb.Handle(context.Background(), c)
	if rpc.CodeOf(err) != rpc.CodeForbidden || calls != 0 || !closed(f) {
		t.Fatalf("guarded call: err %v, %d handler calls, fd closed %v", err, calls, closed(f))
	}
	c = &rpc.Call{Body: body(t, msg.OpPtyPut, nil), FDs: []*os.File{pipe(t)}}
	rep, err := tb.Handle(context.Background(), c)
	if err != nil || calls != 1 || len(rep.FDs) != 1 {
		t.Fatalf("root's call: err %v, %d handler calls, %d fds", err, calls, len(rep.FDs))
	}
	closeAll(rep.FDs)
}

func TestCheck(t *testing.T) {
	h := func(context.Context, *rpc.Call, optable.None) (optable.None, error) { return optable.None{}, nil }
	cases := []struct {
		name string
		tb   optable.Table
		want string
	}{
		{"good", optable.Table{Protocol: "a to b", Ops: []optable.Entry{optable.Op("x", h), optable.Op("y", h)}}, ""},
		{"no protocol", optable.Table{Ops: []optable.Entry{optable.Op("x", h)}}, "without a protocol"},
		{"twice", optable.Table{Protocol: "a to b", Ops: []optable.Entry{optable.Op("x", h), optable.Op("x", h)}}, "listed twice"},
		{"zero entry", optable.Table{Protocol: "a to b", Ops: []optable.Entry{{}}}, "without a name"},
	}
	for _, tc := range cases {
		err := tc.tb.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestWrite(t *testing.T) {
	calls := 0
	tb := table(t, &calls)
	var b bytes.Buffer
	if err := optable.Write(&b, []optable.Table{*tb}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`protocol "test to test": ops 4, at most 1 fds in`,
		"pty-list  fds in 0, out 0",
		"args  optable_test.echoArgs {word string, n int (optional)}",
		"reply optable_test.echoReply {word string}",
		"pty-put  fds in 1, out 1",
		"args  none",
		"pty-recheck: refused (forbidden): is served to admins only",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Via's inner arguments are bytes inside its own, which the request
// frame's check does not look into: they get the strict check themselves.
func TestViaChecksInnerArgs(t *testing.T) {
	type wrapped struct {
		Args []byte `msgpack:"args"`
	}
	calls := 0
	inner := optable.Op(msg.OpPtyList, func(_ context.Context, _ *rpc.Call, a echoArgs) (echoReply, error) {
		calls++
		return echoReply{Word: a.Word}, nil
	})
	tb := &optable.Table{Protocol: "gateway to test", Ops: []optable.Entry{
		optable.Via(inner, func(_ context.Context, _ *rpc.Call, w wrapped) ([]byte, error) { return w.Args, nil }),
	}}
	good, _ := msgpack.Marshal(echoArgs{Word: "hi"})
	huge := []byte{0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'}
	for _, tc := range []struct {
		name     string
		inner    []byte
		wantCode string
	}{
		{"good", good, ""},
		{"a 2 GiB string claimed in 6 bytes", huge, rpc.CodeBadRequest},
	} {
		calls = 0
		w, _ := msgpack.Marshal(wrapped{Args: tc.inner})
		_, err := tb.Handle(context.Background(), &rpc.Call{Body: body(t, msg.OpPtyList, w)})
		if got := rpc.CodeOf(err); got != tc.wantCode || (tc.wantCode == "") != (calls == 1) {
			t.Errorf("%s: code %q (%v), %d handler calls", tc.name, got, err, calls)
		}
		if tc.wantCode != "" && !strings.Contains(err.Error(), "not well-formed") {
			t.Errorf("%s: %v, want the well-formedness check's refusal", tc.name, err)
		}
	}
}

// ViaOr runs the alternative only when asked, with the same inner-argument
// checks; without one it refuses instead of falling back to e.
func TestViaOr(t *testing.T) {
	type wrapped struct {
		Args []byte `msgpack:"args"`
		Alt  bool   `msgpack:"alt"`
	}
	var ran string
	e := optable.Plain(msg.OpPtyList, func(a echoArgs) (echoReply, error) { ran = "e"; return echoReply{Word: a.Word}, nil })
	alt := optable.Plain(msg.OpPtyList, func(optable.None) (echoReply, error) { ran = "alt"; return echoReply{}, nil })
	reads := optable.Plain(msg.OpPtyList, func(a echoArgs) (echoReply, error) { ran = "reads"; return echoReply{}, nil })
	in := func(_ context.Context, _ *rpc.Call, w wrapped) ([]byte, bool, error) { return w.Args, w.Alt, nil }
	good, _ := msgpack.Marshal(echoArgs{Word: "hi"})
	huge := []byte{0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'}
	for _, tc := range []struct {
		name     string
		alt      *optable.Entry
		w        wrapped
		wantRan  string
		wantCode string
	}{
		{"e", &alt, wrapped{Args: good}, "e", ""},
		{"alt", &alt, wrapped{Args: good, Alt: true}, "alt", ""},
		{"alt asked, none given", nil, wrapped{Args: good, Alt: true}, "", rpc.CodeForbidden},
		{"alt, inner args not well-formed", &reads, wrapped{Args: huge, Alt: true}, "", rpc.CodeBadRequest},
		{"alt reading no args", &alt, wrapped{Args: huge, Alt: true}, "alt", ""},
	} {
		ran = ""
		tb := &optable.Table{Protocol: "gateway to test", Ops: []optable.Entry{optable.ViaOr(e, tc.alt, in)}}
		w, _ := msgpack.Marshal(tc.w)
		_, err := tb.Handle(context.Background(), &rpc.Call{Body: body(t, msg.OpPtyList, w)})
		if got := rpc.CodeOf(err); got != tc.wantCode || ran != tc.wantRan {
			t.Errorf("%s: code %q (%v), ran %q; want %q, %q", tc.name, got, err, ran, tc.wantCode, tc.wantRan)
		}
	}
}
