package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/pty"
	"sluice/msg"
	"sluice/rpc"
)

// store plays the host's ptystore on "gateway to ptystore" for the
// relay's reports: answer says what the n-th attached report gets.
type store struct {
	n      atomic.Int32
	answer func(n int, ctx context.Context) (msg.PtyViewersReply, error)
}

func (s *store) CallRaw(ctx context.Context, body []byte, fds []*os.File) ([]byte, []*os.File, error) {
	var req msg.Request
	var ga msg.GatewayArgs
	var a msg.PtyViewers
	if err := msgpack.Unmarshal(body, &req); err != nil {
		return nil, nil, err
	}
	if err := msgpack.Unmarshal(req.Args, &ga); err != nil {
		return nil, nil, err
	}
	if err := msgpack.Unmarshal(ga.Args, &a); err != nil {
		return nil, nil, err
	}
	if req.Op != msg.OpPtyViewers || ga.HostGrant != nil {
		return nil, nil, rpc.Errorf(rpc.CodeBadRequest, "unexpected %s", req.Op)
	}
	if len(a.Attached) == 0 { // the last report: left
		b, _ := msgpack.Marshal(msg.PtyViewersReply{})
		return b, nil, nil
	}
	rep, err := s.answer(int(s.n.Add(1)), ctx)
	if err != nil {
		return nil, nil, err
	}
	b, _ := msgpack.Marshal(rep)
	return b, nil, nil
}

func hang(_ int, ctx context.Context) (msg.PtyViewersReply, error) {
	<-ctx.Done()
	return msg.PtyViewersReply{}, ctx.Err()
}

// A streamed session goes on only while the host's ptystore answers its
// reports and holds it: a ptystore that hangs, refuses as busy or fails
// for MissedReports periods, or no longer knows the session, ends the
// stream (fail closed), as its detach mark does; one that answers, even
// with a failure now and then, keeps it.
func TestStreamFailsClosed(t *testing.T) {
	const every = 20 * time.Millisecond
	id := "s-1"
	cases := []struct {
		name   string
		answer func(int, context.Context) (msg.PtyViewersReply, error)
		notice string // "" = still streaming after 30 reports
	}{
		{"answers attached", func(int, context.Context) (msg.PtyViewersReply, error) { return msg.PtyViewersReply{}, nil }, ""},
		{"fails two of three", func(n int, _ context.Context) (msg.PtyViewersReply, error) {
			if n%3 != 0 {
				return msg.PtyViewersReply{}, rpc.ErrBusy
			}
			return msg.PtyViewersReply{}, nil
		}, ""},
		{"detached by policy", func(n int, _ context.Context) (msg.PtyViewersReply, error) {
			return msg.PtyViewersReply{Detached: []string{id}}, nil
		}, DetachedNotice},
		{"hangs", hang, UnansweredNotice},
		{"answers, then hangs", func(n int, ctx context.Context) (msg.PtyViewersReply, error) {
			if n < 3 {
				return msg.PtyViewersReply{}, nil
			}
			return hang(n, ctx)
		}, UnansweredNotice},
		{"always busy", func(int, context.Context) (msg.PtyViewersReply, error) { return msg.PtyViewersReply{}, rpc.ErrBusy }, UnansweredNotice},
		{"unreachable", func(int, context.Context) (msg.PtyViewersReply, error) {
			return msg.PtyViewersReply{}, errors.New("dial unix ptystore.sock: connection refused")
		}, UnansweredNotice},
		{"no longer holds it", func(int, context.Context) (msg.PtyViewersReply, error) { return msg.PtyViewersReply{Unknown: 1}, nil }, GoneNotice},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			master, slave, err := pty.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer master.Close()
			defer slave.Close()
			inR, inW, _ := os.Pipe()
			outR, outW, _ := os.Pipe()
			defer inR.Close()
			defer inW.Close()
			defer outR.Close()
			defer outW.Close()
			st := &store{answer: c.answer}
			r := &Relay{Host: "h1", In: inR, Out: outW, ReportEvery: every,
				PtyStore: func() (Caller, error) { return st, nil },
				Log:      slog.New(slog.NewTextHandler(io.Discard, nil))}
			ended := make(chan error, 1)
			go func() { ended <- r.stream(context.Background(), id, master) }()
			got := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(outR)
				got <- string(b)
			}()
			if c.notice == "" {
				for st.n.Load() < 30 {
					select {
					case <-ended:
						t.Fatalf("stream ended after %d reports, want it going on", st.n.Load())
					case <-time.After(every):
					}
				}
				return
			}
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatalf("still streaming 5 s and %d reports later; want it cut with %q", st.n.Load(), strings.TrimSpace(c.notice))
			}
			outW.Close()
			// The copy from the session's pty still holds outW's fd in
			// production only until the process exits; here, read what
			// was written.
			select {
			case s := <-got:
				if !strings.Contains(s, c.notice) {
					t.Errorf("channel got %q, want %q", s, c.notice)
				}
			case <-time.After(time.Second):
				t.Fatal("channel not closed")
			}
		})
	}
}
