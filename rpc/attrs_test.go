package rpc

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"sluice/internal/testbuf"
)

// A handler's Attrs land on the call's log line (the gateway's host and
// fleet user), after the fields every line has.
func TestCallLineCarriesAttrs(t *testing.T) {
	var out testbuf.Buffer
	ts := startServer(t, func(s *Server) {
		s.Log = slog.New(slog.NewTextHandler(&out, nil))
		s.Routes[0].Handle = func(ctx context.Context, c *Call) (Reply, error) {
			c.Attrs = append(c.Attrs, slog.String("host", "h1"), slog.String("fleet_user", "alice"))
			return echoHandler(ctx, c)
		}
	})
	var rep echoRep
	if _, err := ts.client().Call(context.Background(), echoReq{Text: "hi"}, nil, &rep); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(out.String(), "rpc: call") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	line := out.String()
	for _, want := range []string{"call=echo", "result=ok", " host=h1", " fleet_user=alice"} {
		if !strings.Contains(line, want) {
			t.Errorf("call line %q lacks %q", line, want)
		}
	}
}
