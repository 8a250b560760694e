package admit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve accepts through g on a loopback listener and hands admitted
// connections to the test.
func serve(t *testing.T, g *Gate) (addr string, accepted chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := g.Listen(l)
	t.Cleanup(func() { gl.Close() })
	accepted = make(chan net.Conn, 64)
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	return l.Addr().String(), accepted
}

// dialFrom connects from a given loopback address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// outcome is what the client sees: "admitted" (the server took the
// connection), or the 503's first body line.
func outcome(t *testing.T, c net.Conn, accepted chan net.Conn) (string, net.Conn) {
	t.Helper()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	select {
	case sc := <-accepted:
		return "admitted", sc
	case <-time.After(200 * time.Millisecond):
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("neither admitted nor answered: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("refusal status %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), nil
}

func TestGateCaps(t *testing.T) {
	g := NewGate(Limits{MaxConns: 4, MaxUnauth: 3, MaxUnauthPerSource: 2}, nil)
	addr, accepted := serve(t, g)
	steps := []struct {
		src    string
		signIn bool // the server marks the admitted connection signed in
		want   string
	}{
		{"127.0.0.1", false, "admitted"},
		{"127.0.0.1", false, "admitted"},
		{"127.0.0.1", false, refusals[refusedSource]}, // two waiting from .1
		{"127.0.0.2", true, "admitted"},               // signs in: frees its waiting slot
		{"127.0.0.2", false, "admitted"},              // three waiting now
		{"127.0.0.3", false, refusals[refusedAll]},    // four open
	}
	var held []net.Conn
	for i, st := range steps {
		got, sc := outcome(t, dialFrom(t, st.src, addr), accepted)
		if got != st.want {
			t.Fatalf("step %d from %s: %q, want %q", i, st.src, got, st.want)
		}
		if sc != nil {
			held = append(held, sc)
			if st.signIn {
				g.SignedIn(sc)
			}
		}
	}
	if s := g.Stats(); s.Total != 4 || s.Unauth != 3 {
		t.Fatalf("stats %+v", s)
	}
	// Closing gives the slots back: one from .1 may wait again.
	held[0].Close()
	held[0].Close() // twice counts once
	if s := g.Stats(); s.Total != 3 || s.Unauth != 2 {
		t.Fatalf("after close: %+v", s)
	}
	if got, _ := outcome(t, dialFrom(t, "127.0.0.1", addr), accepted); got != "admitted" {
		t.Fatalf("after a close: %q", got)
	}
	// The unauth cap in total (3 waiting, one open slot left).
	if got, _ := outcome(t, dialFrom(t, "127.0.0.4", addr), accepted); got != refusals[refusedAll] {
		t.Fatalf("at the connection cap: %q", got)
	}
}

func TestGateUnauthTotal(t *testing.T) {
	g := NewGate(Limits{MaxConns: 10, MaxUnauth: 2, MaxUnauthPerSource: -1}, nil)
	addr, accepted := serve(t, g)
	for i, want := range []string{"admitted", "admitted", refusals[refusedUnauth]} {
		if got, _ := outcome(t, dialFrom(t, "127.0.0.1", addr), accepted); got != want {
			t.Fatalf("connection %d: %q, want %q", i, got, want)
		}
	}
}

func TestSignedInIgnoresOtherConns(t *testing.T) {
	g := NewGate(Limits{}, nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	g.SignedIn(a) // not one of ours: no effect, no panic
	if s := g.Stats(); s != (Stats{}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestRate(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewRate(6)
	r.now = func() time.Time { return now }
	for i := range 6 {
		if !r.Allow("a") {
			t.Fatalf("attempt %d refused within the burst", i)
		}
	}
	if r.Allow("a") {
		t.Fatal("seventh attempt in the same instant allowed")
	}
	if !r.Allow("b") {
		t.Fatal("another address limited by the first")
	}
	now = now.Add(10 * time.Second) // one token back at 6 a minute
	if !r.Allow("a") || r.Allow("a") {
		t.Fatal("refill is not one token per ten seconds")
	}
	if !NewRate(0).Allow("a") || !(*Rate)(nil).Allow("a") {
		t.Fatal("no limit configured, yet refused")
	}
}

func TestRateForgetsWhenFull(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewRate(1)
	r.now = func() time.Time { return now }
	for i := range maxSources {
		r.Allow(net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).String())
	}
	if len(r.buckets) != maxSources {
		t.Fatalf("%d buckets", len(r.buckets))
	}
	if !r.Allow("192.0.2.1") {
		t.Fatal("a new address refused when the table is full")
	}
	if len(r.buckets) > maxSources {
		t.Fatalf("table grew to %d", len(r.buckets))
	}
}
