package frontend

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gorilla/websocket"

	"sluice/msg"
	"sluice/rpc"
)

func testHello(proto, role string) rpc.Hello {
	p, ok := msg.Lookup(proto)
	if !ok {
		panic(proto)
	}
	id := make([]byte, 32)
	copy(id, proto+role)
	return rpc.Hello{Intent: msg.Intent(p, role), BuildID: hex.EncodeToString(id)}
}

// readRequest reads a client's hello lines and request frame off c.
func readRequest(c net.Conn) error {
	var b []byte
	buf := make([]byte, 4096)
	for {
		_, n, need, err := rpc.ParseHello(b)
		if err != nil {
			return err
		}
		if !need {
			if _, _, need, err := rpc.ParseFrame(b[n:], 1<<20); err != nil || !need {
				return err
			}
		}
		k, err := c.Read(buf)
		if err != nil {
			return err
		}
		b = append(b, buf[:k]...)
	}
}

// TestHelperStopped: a helper process is killed while it holds a page's
// call, at three points (request read and nothing said; part way through
// its answer; request not even read), and the page is told which helper
// stopped and to try again. The helper is played by a real process that
// holds the accepted connection as its only copy and is then SIGKILLed,
// so the kernel ends the connection exactly as it does for a killed
// sluice-auth.
func TestHelperStopped(t *testing.T) {
	tests := []struct {
		name string
		// serve does the helper's part before it is killed.
		serve func(c net.Conn, hello rpc.Hello) error
	}{
		{"closed without answering", func(c net.Conn, _ rpc.Hello) error { return readRequest(c) }},
		{"answer cut short", func(c net.Conn, h rpc.Hello) error {
			if err := readRequest(c); err != nil {
				return err
			}
			// The hello lines, then a frame that says 100 bytes and has 3.
			out := fmt.Appendf(nil, "%s\n%s\n", h.Intent, h.BuildID)
			out = binary.BigEndian.AppendUint32(out, 100)
			_, err := c.Write(append(out, 1, 2, 3))
			return err
		}},
		{"request unread", func(net.Conn, rpc.Hello) error { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "auth.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			server := testHello(msg.ProtoWebToAuth, "server")
			h := &Helpers{auth: helperClient{name: msg.Auth, Client: &rpc.Client{Path: sock,
				Hello: testHello(msg.ProtoWebToAuth, "client"), Expect: server}}}

			helperErr := make(chan error, 1)
			go func() {
				helperErr <- func() error {
					c, err := l.AcceptUnix()
					if err != nil {
						return err
					}
					if err := tt.serve(c, server); err != nil {
						c.Close()
						return err
					}
					f, err := c.File()
					c.Close()
					if err != nil {
						return err
					}
					holder := exec.Command("sleep", "600")
					holder.ExtraFiles = []*os.File{f}
					err = holder.Start()
					f.Close()
					if err != nil {
						return err
					}
					holder.Process.Kill()
					holder.Wait()
					return nil
				}()
			}()

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			origin := "http://" + ln.Addr().String()
			srv, err := New(Config{Origins: []string{origin}, Backend: h, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			hs := &http.Server{Handler: srv}
			go hs.Serve(ln)
			defer func() { hs.Close(); srv.Close() }()
			hdr := http.Header{}
			hdr.Set("Origin", origin)
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/ws", hdr)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			c := &wsClient{ws: ws}
			c.expect(t, "hello")
			c.send(t, map[string]any{"t": "login-begin"})
			var m map[string]any
			for m["t"] != "error" {
				if err := ws.ReadJSON(&m); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-helperErr; err != nil {
				t.Fatalf("helper side: %v", err)
			}
			want := map[string]any{"t": "error", "op": "login-begin", "code": rpc.CodeInternal,
				"message": "the auth helper stopped before answering; try again"}
			if fmt.Sprint(m) != fmt.Sprint(want) {
				t.Fatalf("page got %v, want %v", m, want)
			}
		})
	}
}
