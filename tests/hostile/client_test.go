package hostile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/rpc"
)

// fakeServer answers one connection the way answer says, after reading
// the client's whole request (lines and frame), which it hands to answer.
func fakeServer(t *testing.T, answer func(c *net.UnixConn, req []byte)) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "fake.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// The rpc client pipelines its lines and frame in one write.
		want := len(inClient.Lines()) + len(Frame(request("echo", map[string]any{})))
		req := make([]byte, want)
		io.ReadFull(c, req)
		answer(c, req)
	}()
	return sock
}

func write(b []byte) func(c *net.UnixConn, req []byte) {
	return func(c *net.UnixConn, req []byte) { c.Write(b) }
}

// TestClientRefusesHostileServers: rpc.Client, the client every sluice
// component uses, against a fake server saying the wrong thing.
func TestClientRefusesHostileServers(t *testing.T) {
	okPayload := mp(map[string]any{"op": "echo"})
	good := Cat(inServer.Lines(), Frame(nil), Frame(okPayload))
	for _, tc := range []struct {
		name   string
		answer func(c *net.UnixConn, req []byte)
		want   error  // errors.Is target, or nil with text set
		text   string // substring of the error
	}{
		{"echoes the client's request", func(c *net.UnixConn, req []byte) { c.Write(req) }, rpc.ErrHandshake, ""},
		{"echoes the client's lines, then answers", func(c *net.UnixConn, req []byte) {
			c.Write(Cat(inClient.Lines(), Frame(nil), Frame(okPayload)))
		}, rpc.ErrHandshake, ""},
		{"server intent with the client's build ID", write(Cat(Hello{inServer.Intent, inClient.BuildID}.Lines(), Frame(nil), Frame(okPayload))), rpc.ErrHandshake, ""},
		{"client intent with the server's build ID", write(Cat(Hello{inClient.Intent, inServer.BuildID}.Lines(), Frame(nil), Frame(okPayload))), rpc.ErrHandshake, ""},
		{"build ID in upper case", write(Cat(Hello{inServer.Intent, strings.ToUpper(inServer.BuildID)}.Lines(), Frame(nil), Frame(okPayload))), rpc.ErrHandshake, ""},
		{"build ID one digit short", write(Cat([]byte(inServer.Intent+"\n"+inServer.BuildID[:63]+"\n"), Frame(nil), Frame(okPayload))), rpc.ErrHandshake, ""},
		{"100 KiB of intent", write(bytes.Repeat([]byte("s"), 100<<10)), rpc.ErrHandshake, ""},
		{"closes without a word", write(nil), rpc.ErrHandshake, ""},
		{"busy", write([]byte(BusyLine)), rpc.ErrBusy, ""},
		{"error frame", write(Cat(inServer.Lines(), Frame([]byte("denied: no")))), nil, "remote: denied: no"},
		{"payload length of 4 GiB", write(Cat(inServer.Lines(), Frame(nil), Len(0xffffffff))), rpc.ErrFrameTooLarge, ""},
		{"error frame of 4 GiB", write(Cat(inServer.Lines(), Len(0xffffffff))), rpc.ErrFrameTooLarge, ""},
		{"bytes after the payload", write(Cat(good, []byte{0})), nil, "1 bytes after the reply"},
		{"payload cut short", write(good[:len(good)-2]), rpc.ErrTruncated, ""},
		{"payload claiming a 2 GiB string", write(Cat(inServer.Lines(), Frame(nil), Frame(hostileClaim))), nil, "not well-formed msgpack"},
		{"silent", func(c *net.UnixConn, req []byte) { io.Copy(io.Discard, c) }, rpc.ErrTimeout, ""},
		{"correct answer", write(good), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := fakeServer(t, tc.answer)
			cl := &rpc.Client{Path: sock, Hello: rpcHello(inClient), Expect: rpcHello(inServer), Timeout: 500 * time.Millisecond}
			var rep map[string]any
			fds, err := cl.Call(context.Background(), map[string]any{"op": "echo", "args": map[string]any{}}, nil, &rep)
			for _, f := range fds {
				f.Close()
			}
			switch {
			case tc.want != nil:
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
			case tc.text != "":
				if err == nil || !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("err = %v, want one saying %q", err, tc.text)
				}
			default:
				if err != nil || rep["op"] != "echo" {
					t.Fatalf("control call: %v %v", rep, err)
				}
			}
		})
	}
}

// TestClientClosesExcessFDs: a server sending more fds than the client
// takes gets refused, and none of them stays open in the client.
func TestClientClosesExcessFDs(t *testing.T) {
	fds := pipes(t, 20)
	sock := fakeServer(t, func(c *net.UnixConn, req []byte) {
		c.WriteMsgUnix(Cat(inServer.Lines(), Frame(nil), Frame(mp(map[string]any{}))), unix.UnixRights(fds...), nil)
	})
	before, _ := CountFDs("self")
	cl := &rpc.Client{Path: sock, Hello: rpcHello(inClient), Expect: rpcHello(inServer), Timeout: 2 * time.Second}
	got, err := cl.Call(context.Background(), map[string]any{"op": "echo", "args": map[string]any{}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "20 fds on the reply") || len(got) != 0 {
		t.Fatalf("err = %v with %d fds, want a refusal of 20 fds", err, len(got))
	}
	// The fake server's connection is closed by now too; only ours count.
	var after int
	if !settle(func() bool { after, _ = CountFDs("self"); return after <= before }) {
		t.Fatalf("%d fds open after the call, %d before", after, before)
	}
}
