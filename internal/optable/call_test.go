package optable_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/optable"
	"sluice/msg"
)

// replier answers with a fixed reply and n fresh fds, and keeps what it
// was asked.
type replier struct {
	n    int
	got  msg.Request
	fds  []*os.File
	sent int
}

func (r *replier) Call(_ context.Context, req any, send []*os.File, resp any) ([]*os.File, error) {
	r.got = req.(msg.Request)
	// Args is the caller's pooled buffer, valid only during Call.
	r.got.Args = append([]byte(nil), r.got.Args...)
	r.sent = len(send)
	b, _ := msgpack.Marshal(echoReply{Word: "back"})
	if err := msgpack.Unmarshal(b, resp); err != nil {
		return nil, err
	}
	r.fds = nil
	for range r.n {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		pw.Close()
		r.fds = append(r.fds, pr)
	}
	return r.fds, nil
}

func TestCall(t *testing.T) {
	for _, tc := range []struct {
		name      string
		gives     int
		want      int
		wantError string
	}{
		{"no fds, none wanted", 0, 0, ""},
		{"one fd, one wanted", 1, 1, ""},
		{"an fd nobody asked for", 1, 0, "reply carried 1 fds, want 0"},
		{"no fd where one is due", 0, 1, "reply carried 0 fds, want 1"},
		{"two where one is due", 2, 1, "reply carried 2 fds, want 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &replier{n: tc.gives}
			send := []*os.File{pipe(t)}
			r, fds, err := optable.Call[echoReply](context.Background(), cl, msg.OpPtyList, echoArgs{Word: "hi"}, send, tc.want)
			var args echoArgs
			if merr := msgpack.Unmarshal(cl.got.Args, &args); merr != nil || cl.got.Op != msg.OpPtyList || args.Word != "hi" || cl.sent != 1 {
				t.Fatalf("sent %+v (%v), %d fds", cl.got, merr, cl.sent)
			}
			if tc.wantError == "" {
				if err != nil || r.Word != "back" || len(fds) != tc.want {
					t.Fatalf("reply %+v, %d fds, err %v", r, len(fds), err)
				}
				closeAll(fds)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantError) || fds != nil {
				t.Fatalf("err %v, %d fds; want %q", err, len(fds), tc.wantError)
			}
			for i, f := range cl.fds {
				if !closed(f) {
					t.Errorf("fd %d of a refused reply left open", i)
				}
			}
		})
	}
}
