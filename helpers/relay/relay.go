package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/termsock"
	"sluice/msg"
	"sluice/rpc"
)

// MaxRequest bounds the request frame, as rpc.Server's default does.
const MaxRequest = 64 << 10

// RequestTimeout bounds the wait for the request frame after the ready line.
const RequestTimeout = 10 * time.Second

// ReportEvery is how often a streamed session is reported attached: as
// the frontend does for local sessions, every msg.PolicyDetachPollMs, so
// the answer's detach mark (on-revoke detach) cuts the stream that soon;
// the same report renews the viewer lease (msg.ViewerLeaseMs).
const ReportEvery = msg.PolicyDetachPollMs * time.Millisecond

// DetachedNotice is written to the channel, after the session's last
// output, when the host's policy detached the session: the stream then
// ends and the shell goes on.
const DetachedNotice = "\r\n[sluice: the policy of this host no longer allows this session: detached (the shell keeps running)]\r\n"

// Caller makes one call to a host helper; *rpc.Client is one.
type Caller interface {
	CallRaw(ctx context.Context, body []byte, fds []*os.File) ([]byte, []*os.File, error)
}

// Relay serves one ssh session.
type Relay struct {
	Host     string // --host of the forced command
	In, Out  *os.File
	Policy   func() (Caller, error) // "gateway to policy"
	PtyStore func() (Caller, error) // "gateway to ptystore"
	Log      *slog.Logger
	// ReportEvery overrides ReportEvery (tests).
	ReportEvery time.Duration

	user string // the host grant's user, for the log
}

// Run serves the session's one request.
func (r *Relay) Run(ctx context.Context) error {
	if isTTY(r.In) {
		// The gateway asks for no pty (`ssh -T`) and the relay account's
		// key line allows none; if one was given anyway, raw before
		// anything is read: a cooked pty would echo the request back into
		// the answer and turn \n into \r\n.
		if err := makeRaw(r.In); err != nil {
			return fmt.Errorf("relay: raw mode: %w", err)
		}
	}
	if _, err := io.WriteString(r.Out, msg.RelayReady); err != nil {
		return fmt.Errorf("relay: ready: %w", err)
	}
	req, err := r.readRequest()
	if err != nil {
		r.reply(msg.RelayReply{Error: rpc.CodeBadRequest + ": " + err.Error()})
		return err
	}
	r.user = grantUser(req.HostGrant)
	r.Log.Info("relay: call", "host", r.Host, "service", req.Service, "op", req.Op, "stream", req.Stream,
		"user", grantUser(req.HostGrant), "client", os.Getenv("SSH_CLIENT"))
	if req.Op == msg.OpRelayPing {
		b, _ := msgpack.Marshal(msg.RelayPingReply{Host: r.Host})
		return r.reply(msg.RelayReply{Payload: b})
	}
	if req.Stream && req.Framing != msg.RelayFramingV1 {
		// Before any call: an older gateway's unframed stream would
		// type its own frames' bytes into the shell.
		err := rpc.Errorf(rpc.CodeBadRequest, "a stream must use framing %d, not %d (gateway and host at different versions?)", msg.RelayFramingV1, req.Framing)
		return r.replyErr(err)
	}
	if !req.Stream {
		payload, fds, err := r.call(ctx, req.Service, req.Op, req.HostGrant, req.Args, nil)
		closeAll(fds)
		if err != nil {
			return r.replyErr(err)
		}
		if len(fds) > 0 {
			return r.replyErr(rpc.Errorf(rpc.CodeInternal, "%s answered with %d fds", req.Op, len(fds)))
		}
		return r.reply(msg.RelayReply{Payload: payload})
	}
	open, master, err := r.open(ctx, req)
	if err != nil {
		return r.replyErr(err)
	}
	defer master.Close()
	b, err := msgpack.Marshal(open)
	if err != nil {
		return r.replyErr(err)
	}
	if err := r.reply(msg.RelayReply{Payload: b, Framing: msg.RelayFramingV1}); err != nil {
		return err
	}
	return r.stream(ctx, open.Session.ID, master)
}

// open makes the session's call: create-shell-session (which the host's
// policy puts into its ptystore) or pty-get, and returns the pty master.
func (r *Relay) open(ctx context.Context, req msg.RelayRequest) (msg.FleetOpenReply, *os.File, error) {
	var out msg.FleetOpenReply
	switch req.Op {
	case msg.OpCreateShellSession:
		payload, fds, err := r.call(ctx, msg.Policy, req.Op, req.HostGrant, req.Args, nil)
		if err != nil {
			return out, nil, err
		}
		master, err := oneFD(fds)
		if err != nil {
			return out, nil, err
		}
		var cr msg.CreateShellSessionReply
		if err := msgpack.Unmarshal(payload, &cr); err != nil {
			master.Close()
			return out, nil, fmt.Errorf("relay: create reply: %w", err)
		}
		// The host's policy put it into the host's ptystore already.
		return msg.FleetOpenReply{Host: r.Host, Session: cr.Session, Mode: msg.ModeOwner, Limits: cr.Limits, Rule: cr.Rule}, master, nil
	case msg.OpPtyGet:
		payload, fds, err := r.call(ctx, msg.PtyStore, req.Op, req.HostGrant, req.Args, nil)
		if err != nil {
			return out, nil, err
		}
		master, err := oneFD(fds)
		if err != nil {
			return out, nil, err
		}
		var gr msg.PtyGetReply
		if err := msgpack.Unmarshal(payload, &gr); err != nil {
			master.Close()
			return out, nil, fmt.Errorf("relay: get reply: %w", err)
		}
		return msg.FleetOpenReply{Host: r.Host, Session: gr.Session, Mode: gr.Mode, Epoch: gr.Epoch, Limits: gr.Limits}, master, nil
	}
	return out, nil, rpc.Errorf(rpc.CodeBadRequest, "%s does not stream", req.Op)
}

// call makes one call to a host helper on the gateway protocol.
func (r *Relay) call(ctx context.Context, service, op string, hg *msg.HostGrant, args []byte, fds []*os.File) ([]byte, []*os.File, error) {
	var mk func() (Caller, error)
	switch service {
	case msg.Policy:
		mk = r.Policy
	case msg.PtyStore:
		mk = r.PtyStore
	default:
		return nil, nil, rpc.Errorf(rpc.CodeBadRequest, "no service %q", service)
	}
	cl, err := mk()
	if err != nil {
		return nil, nil, fmt.Errorf("relay: %s client: %w", service, err)
	}
	ga, err := msgpack.Marshal(msg.GatewayArgs{HostGrant: hg, Args: args})
	if err != nil {
		return nil, nil, err
	}
	body, err := msgpack.Marshal(msg.Request{Op: op, Args: ga})
	if err != nil {
		return nil, nil, err
	}
	return cl.CallRaw(ctx, body, fds)
}

// stream copies the session's output to the channel and the channel's
// input frames to the session until either ends. Blocking copies are the
// flow control: a slow gateway stops our reads of the pty, and so the
// shell, as a slow frontend does locally; input has the channel's other
// direction, so Ctrl-C is not queued behind output.
func (r *Relay) stream(ctx context.Context, id string, master *os.File) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGTERM)
	defer signal.Stop(hup)
	done := make(chan string, 2)
	go func() { done <- r.input(master) }()
	go func() { copyOut(r.Out, master); done <- "session ended" }()
	tick := time.NewTicker(r.reportEvery())
	defer tick.Stop()
	rp := &reporter{r: r, id: id, every: r.reportEvery(), lastOK: time.Now()}
	var why string
	var cut reportVerdict
	for why == "" {
		select {
		case why = <-done:
		case <-hup:
			why = "ssh session hung up"
		case <-ctx.Done():
			why = "stopped"
		case now := <-tick.C:
			// Fail closed (report.go): detached, gone, or unanswered
			// for too long all end the stream.
			if v, w := rp.report(ctx, now); v != keepStreaming {
				why, cut = w, v
				// Writes to the channel are whole (the fd's write lock),
				// so the notice lands between two chunks of output; the
				// copies end with this process, which ends the stream.
				io.WriteString(r.Out, v.notice())
			}
		}
	}
	// The detached limit runs from now; if this report is lost, the
	// lease runs out instead. Not asked of a ptystore that stopped
	// answering: the stream ends with this process, not a deadline later.
	if cut != cutUnanswered {
		if _, err := r.report(context.Background(), nil, []string{id}, ReportTimeout); err != nil {
			r.Log.Warn("relay: pty-viewers left", "host", r.Host, "session", id, "err", err)
		}
	}
	r.Log.Info("relay: stream ended", "host", r.Host, "session", id, "why", why, "user", r.user)
	return nil
}

// input writes the channel's input frames to the session and sets its
// sizes, until the gateway closes or sends a bad frame; it returns why
// the stream ends. The channel's frames are termsock's (msg.RelayFramingV1),
// read strictly: a bad one ends the stream, and nothing of it or after
// it is typed.
func (r *Relay) input(master *os.File) string {
	d := termsock.NewReader(r.In)
	// A recorded session's fd is the recorder's socket, which takes the
	// same frames: they go on as they came, none re-encoded.
	recorded := termsock.Is(master)
	for {
		typ, p, err := d.Next()
		if err == io.EOF {
			return "gateway closed"
		}
		if err != nil {
			r.Log.Error("relay: input", "host", r.Host, "user", r.user, "err", err)
			return err.Error()
		}
		switch {
		case recorded:
			if _, err := master.Write(d.Frame()); err != nil {
				return "session ended (input: " + err.Error() + ")"
			}
		case typ == termsock.Input:
			if _, err := master.Write(p); err != nil {
				return "session ended (input: " + err.Error() + ")"
			}
		case typ == termsock.Resize:
			cols, rows := termsock.ParseResize(p)
			if err := setSize(master, unix.Winsize{Row: rows, Col: cols}); err != nil {
				r.Log.Warn("relay: window size", "host", r.Host, "err", err)
			}
		}
	}
}

func (r *Relay) reportEvery() time.Duration {
	if r.ReportEvery > 0 {
		return r.ReportEvery
	}
	return ReportEvery
}

func (r *Relay) readRequest() (msg.RelayRequest, error) {
	var req msg.RelayRequest
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var n [4]byte
		if _, err := io.ReadFull(r.In, n[:]); err != nil {
			ch <- res{err: fmt.Errorf("relay: request length: %w", err)}
			return
		}
		l := binary.BigEndian.Uint32(n[:])
		if l > MaxRequest {
			ch <- res{err: fmt.Errorf("relay: request of %d bytes, limit %d", l, MaxRequest)}
			return
		}
		b := make([]byte, l)
		_, err := io.ReadFull(r.In, b)
		ch <- res{b, err}
	}()
	select {
	case x := <-ch:
		if x.err != nil {
			return req, x.err
		}
		if err := (&rpc.Call{Body: x.b}).Decode(&req); err != nil {
			return req, err
		}
		return req, nil
	case <-time.After(RequestTimeout):
		return req, errors.New("relay: no request within the deadline")
	}
}

func (r *Relay) reply(rep msg.RelayReply) error {
	b, err := msgpack.Marshal(rep)
	if err != nil {
		return err
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	_, err = r.Out.Write(append(out, b...))
	return err
}

// replyErr sends err as an error frame's text: a host helper's own
// (code and message as it said them), or failed.
func (r *Relay) replyErr(err error) error {
	text := msg.CodeFailed + ": the host's helper could not be reached; see the relay's log"
	var re *rpc.RemoteError
	var e *rpc.Error
	switch {
	case errors.As(err, &re):
		text = re.Code + ": " + re.Msg
	case errors.As(err, &e):
		text = e.Code + ": " + e.Msg
	}
	r.Log.Warn("relay: call failed", "host", r.Host, "err", err)
	if werr := r.reply(msg.RelayReply{Error: text}); werr != nil {
		return werr
	}
	return err
}

func grantUser(hg *msg.HostGrant) string {
	if hg == nil {
		return ""
	}
	return hg.User
}

func oneFD(fds []*os.File) (*os.File, error) {
	if len(fds) != 1 {
		closeAll(fds)
		return nil, rpc.Errorf(msg.CodeFailed, "reply carried %d fds, want 1", len(fds))
	}
	return fds[0], nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// makeRaw is cfmakeraw(3).
func makeRaw(f *os.File) error {
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		return err
	}
	MakeRaw(t)
	return unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
}

// MakeRaw sets t as cfmakeraw(3) does.
func MakeRaw(t *unix.Termios) {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
}

// setSize is TIOCSWINSZ without Fd(), which would make a pollable
// master blocking under the output copy's read.
func setSize(master *os.File, ws unix.Winsize) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &ws) }); err != nil {
		return err
	}
	return ierr
}
