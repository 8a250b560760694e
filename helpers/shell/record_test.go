package shell_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/helpers/shell"
	"sluice/internal/pty"
	"sluice/internal/termsock"
	"sluice/msg"
)

// ptyBackend hands out a pty whose slave the test keeps, as the "shell".
type ptyBackend struct{ slave chan *os.File }

func (b *ptyBackend) Open(ctx context.Context, req msg.OpenShell) (shell.Opened, error) {
	m, s, err := pty.Open()
	if err != nil {
		return shell.Opened{}, err
	}
	b.slave <- s
	return shell.Opened{Master: m}, nil
}

// A recorded rule: the caller gets the recorder's session socket, never
// the shell's master;
// when recording is unavailable a fail-closed rule starts nothing (the
// shell's pty is hung up) and a fail-open one gets the shell's own master.
func TestHandlerRecording(t *testing.T) {
	for _, tc := range []struct {
		name      string
		spec      *msg.RecordSpec
		recorder  bool
		wantErr   string
		wantInner bool
	}{
		{"not recorded", nil, false, "", true},
		{"recorded", &msg.RecordSpec{}, true, "", false},
		{"fail-closed, recorder down", &msg.RecordSpec{}, false, "failed: recording unavailable", false},
		{"fail-open, recorder down", &msg.RecordSpec{FailOpen: true}, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &ptyBackend{slave: make(chan *os.File, 1)}
			var got msg.RecordSession
			var kept []*os.File
			h := &shell.Handler{Backend: b, Recorder: func(ctx context.Context, a msg.RecordSession, inner *os.File) (*os.File, error) {
				if !tc.recorder {
					return nil, errors.New("connection refused")
				}
				got = a
				// The recorder keeps its own copy, as one over a socket
				// would, and answers with its session socket.
				i, _ := dupFile(inner)
				mine, theirs, err := termsock.Pair()
				if err != nil {
					return nil, err
				}
				kept = append(kept, i, mine)
				return theirs, nil
			}}
			cl := serveHandler(t, h)
			var rep msg.OpenShellReply
			fds, err := cl.Call(context.Background(), request(t, msg.OpOpenShell, msg.OpenShell{
				Machine: msg.HostMachine, User: "alice", Requester: "alice", Env: []string{"TERM=xterm-256color"}, Record: tc.spec,
			}), nil, &rep)
			defer func() {
				for _, f := range append(kept, fds...) {
					f.Close()
				}
			}()
			slave := <-b.slave
			defer slave.Close()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				// The shell's pty is hung up: nothing runs unrecorded.
				slave.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := slave.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("shell's pty not hung up: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(slave.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			innerDev := st.Rdev
			gotDev, err := pty.SlaveDev(fds[0])
			if tc.wantInner && (err != nil || gotDev != innerDev) {
				t.Fatalf("caller did not get the shell's own master: %v", err)
			}
			if !tc.wantInner && (err == nil || !termsock.Is(fds[0])) {
				t.Fatalf("caller got a pty (%v), not the recorder's socket", err)
			}
			if tc.recorder && (got.Session != rep.SessionID || got.UnixUser != "alice" || got.Term != "xterm-256color") {
				t.Fatalf("record-session args %+v", got)
			}
		})
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
