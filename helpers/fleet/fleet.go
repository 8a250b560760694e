package fleet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/termsock"
	"sluice/msg"
	"sluice/rpc"
)

// MaxReply bounds a relay's answer frame (rpc's client default).
const MaxReply = 1 << 20

// Fleet is the helper's state: its directory and its running streams.
type Fleet struct {
	Dir     string // hosts.json, known_hosts, id_ed25519
	SSH     string // the ssh binary; default "ssh"
	Log     *slog.Logger
	Timeout time.Duration // ssh connect plus the relay's answer; default 15 s
	// MaxStreams bounds the ssh sessions streaming at once.
	MaxStreams int

	mu      sync.Mutex
	streams int
}

func (f *Fleet) timeout() time.Duration {
	if f.Timeout > 0 {
		return f.Timeout
	}
	return 15 * time.Second
}

// sshArgs is the whole ssh command line: no user config, only our key,
// only our known_hosts, the host's key pinned under its fleet name, no
// agent, no forwarding of any kind, and no pty on the host (-T): a
// stream's sizes travel in its input frames, and a pty there would be
// one more kernel hop for every byte of output.
func (f *Fleet) sshArgs(h msg.FleetHost) []string {
	return []string{
		"-F", "/dev/null", "-T",
		"-i", filepath.Join(f.Dir, KeyFile),
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + filepath.Join(f.Dir, KnownHostsFile),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=" + h.Name,
		"-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
		"-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
		"-o", "ConnectTimeout=" + strconv.Itoa(int(f.timeout()/time.Second)),
		"-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
		"-o", "ControlMaster=no", "-o", "ControlPath=none",
		"-o", "ForwardAgent=no", "-o", "ForwardX11=no", "-o", "ClearAllForwardings=yes",
		"-o", "EscapeChar=none", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(h.Port), "-l", h.User, "--", h.Address, "sluice-relay",
	}
}

func (f *Fleet) command(h msg.FleetHost) *exec.Cmd {
	ssh := f.SSH
	if ssh == "" {
		ssh = "ssh"
	}
	cmd := exec.Command(ssh, f.sshArgs(h)...)
	// ssh reads nothing of ours but what the command line says; HOME
	// only keeps it from looking at another user's ~/.ssh.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + f.Dir, "LANG=C"}
	return cmd
}

func (f *Fleet) host(name string) (msg.FleetHost, error) {
	hs, err := LoadHosts(f.Dir)
	if err != nil {
		return msg.FleetHost{}, err
	}
	h, ok := hs.Lookup(name)
	if !ok {
		return h, rpc.Errorf(msg.CodeNotFound, "no host %q in the fleet", name)
	}
	return h, nil
}

// limitWriter keeps the first N bytes of ssh's stderr for the log.
type limitWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.n - w.b.Len(); room > 0 {
		w.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (w *limitWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// exchange waits for the relay's ready line, sends the request frame and
// reads the answer frame: no byte past it, so a stream's first output
// stays in the socket for the frontend.
func exchange(rw io.ReadWriter, req msg.RelayRequest) (msg.RelayReply, error) {
	var rep msg.RelayReply
	if err := waitReady(rw); err != nil {
		return rep, err
	}
	b, err := msgpack.Marshal(req)
	if err != nil {
		return rep, err
	}
	if _, err := rw.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)); err != nil {
		return rep, fmt.Errorf("fleet: send request: %w", err)
	}
	var n [4]byte
	if _, err := io.ReadFull(rw, n[:]); err != nil {
		return rep, fmt.Errorf("fleet: relay answer: %w", err)
	}
	l := binary.BigEndian.Uint32(n[:])
	if l > MaxReply {
		return rep, fmt.Errorf("fleet: relay answer of %d bytes", l)
	}
	body := make([]byte, l)
	if _, err := io.ReadFull(rw, body); err != nil {
		return rep, fmt.Errorf("fleet: relay answer: %w", err)
	}
	if err := (&rpc.Call{Body: body}).Decode(&rep); err != nil {
		return rep, fmt.Errorf("fleet: relay answer: %w", err)
	}
	return rep, nil
}

// waitReady reads up to the relay's ready line, skipping whatever sshd
// printed before it (a banner, a last-login line), at most 8 KiB.
func waitReady(r io.Reader) error {
	want := []byte(msg.RelayReady)
	var seen []byte
	var c [1]byte
	for len(seen) < 8<<10 {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return fmt.Errorf("fleet: no relay ready line: %w", err)
		}
		seen = append(seen, c[0])
		if bytes.HasSuffix(seen, want) {
			return nil
		}
	}
	return errors.New("fleet: no relay ready line in 8 KiB")
}

// relayError turns a relay answer's error text into the error the
// gateway's caller gets: the host helper's own code and message.
func relayError(host, text string) error {
	code, m, ok := bytes.Cut([]byte(text), []byte(": "))
	if !ok || !isCode(string(code)) {
		return rpc.Errorf(msg.CodeFailed, "%s: %s", host, inert(text))
	}
	return rpc.Errorf(string(code), "%s: %s", host, inert(string(m)))
}

// Call carries one non-streaming call to a host and returns the host
// helper's payload.
func (f *Fleet) Call(ctx context.Context, c msg.FleetCall) ([]byte, error) {
	h, err := f.host(c.Host)
	if err != nil {
		return nil, err
	}
	rep, err := f.run(ctx, h, msg.RelayRequest{Service: c.Service, Op: c.Op, Args: c.Args, HostGrant: &c.HostGrant})
	if err != nil {
		return nil, err
	}
	if rep.Error != "" {
		return nil, relayError(h.Name, rep.Error)
	}
	return rep.Payload, nil
}

// Check asks a host's relay for its name.
func (f *Fleet) Check(ctx context.Context, name string) (msg.FleetCheckReply, error) {
	out := msg.FleetCheckReply{Host: name}
	h, err := f.host(name)
	if err != nil {
		return out, err
	}
	start := time.Now()
	rep, err := f.run(ctx, h, msg.RelayRequest{Op: msg.OpRelayPing})
	if err != nil {
		return out, err
	}
	out.ElapsedMs = time.Since(start).Milliseconds()
	if rep.Error != "" {
		return out, relayError(h.Name, rep.Error)
	}
	var p msg.RelayPingReply
	if err := msgpack.Unmarshal(rep.Payload, &p); err != nil {
		return out, fmt.Errorf("fleet: ping answer: %w", err)
	}
	out.RelayHost = p.Host
	return out, nil
}

// run is one ssh session without a pty: pipes both ways.
func (f *Fleet) run(ctx context.Context, h msg.FleetHost, req msg.RelayRequest) (msg.RelayReply, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout())
	defer cancel()
	cmd := f.command(h)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return msg.RelayReply{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return msg.RelayReply{}, err
	}
	stderr := &limitWriter{n: 4 << 10}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return msg.RelayReply{}, fmt.Errorf("fleet: ssh: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	rep, err := exchange(struct {
		io.Reader
		io.Writer
	}{stdout, stdin}, req)
	stdin.Close()
	werr := cmd.Wait()
	if err != nil {
		f.Log.Warn("fleet: relay call failed", "host", h.Name, "op", req.Op, "err", err, "ssh", werr, "stderr", stderr.String())
		return rep, rpc.Errorf(msg.CodeFailed, "%s: cannot reach the host's relay (%s)", h.Name, sshWhy(stderr.String(), err))
	}
	f.Log.Info("fleet: relay call", "host", h.Name, "service", req.Service, "op", req.Op, "user", userOf(req.HostGrant),
		"admin", req.HostGrant != nil && req.HostGrant.Admin, "error", rep.Error)
	return rep, nil
}

// Open starts a streaming session and returns the answer and one end
// of a socket pair (package termsock) for the frontend, which streams it
// as a recorded session's fd: output arrives raw, input and window sizes
// go out as termsock frames (msg.RelayFramingV1), written by the
// frontend itself. The pair's other end is ssh's stdin and stdout, so
// the stream crosses no pty and no process of ours on the gateway: the
// relay deframes what the frontend wrote.
func (f *Fleet) Open(ctx context.Context, c msg.FleetCall) (msg.FleetOpenReply, *os.File, error) {
	var out msg.FleetOpenReply
	if c.Op != msg.OpCreateShellSession && c.Op != msg.OpPtyGet {
		return out, nil, rpc.Errorf(rpc.CodeBadRequest, "%s does not stream", c.Op)
	}
	h, err := f.host(c.Host)
	if err != nil {
		return out, nil, err
	}
	f.mu.Lock()
	if f.MaxStreams > 0 && f.streams >= f.MaxStreams {
		f.mu.Unlock()
		return out, nil, rpc.Errorf(msg.CodeBusy, "%d remote sessions streaming, the most this gateway allows", f.streams)
	}
	f.streams++
	f.mu.Unlock()
	started := false
	defer func() {
		if !started {
			f.done()
		}
	}()
	// mine is in Go's poller, so the exchange's reads end when ssh does;
	// theirs, blocking, is what ssh expects of its stdio.
	mine, theirs, err := termsock.Pair()
	if err != nil {
		return out, nil, fmt.Errorf("fleet: stream: %w", err)
	}
	cmd := f.command(h)
	cmd.Stdin, cmd.Stdout = theirs, theirs
	stderr := &limitWriter{n: 4 << 10}
	cmd.Stderr = stderr
	// ssh holds the stream's only other end: when this helper ends (a
	// crash, a restart), its streams end with it, as they did when ssh's
	// stdin was this helper's pipe, and no ssh runs unsupervised.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		return out, nil, fmt.Errorf("fleet: ssh: %w", err)
	}
	started = true
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		f.done()
		f.Log.Info("fleet: stream ended", "host", h.Name, "ssh", err, "stderr", stderr.String())
	}()
	// Killing ssh ends our reads (EOF) if the relay never answers in time.
	timer := time.AfterFunc(f.timeout(), func() { cmd.Process.Kill() })
	rep, err := exchange(mine, msg.RelayRequest{Service: serviceOf(c.Op), Op: c.Op, Args: c.Args, HostGrant: &c.HostGrant,
		Stream: true, Framing: msg.RelayFramingV1})
	timer.Stop()
	if err != nil {
		cmd.Process.Kill()
		mine.Close()
		<-exited
		f.Log.Warn("fleet: open failed", "host", h.Name, "op", c.Op, "err", err, "stderr", stderr.String())
		return out, nil, rpc.Errorf(msg.CodeFailed, "%s: cannot reach the host's relay (%s)", h.Name, sshWhy(stderr.String(), err))
	}
	if rep.Error != "" {
		mine.Close() // ssh sees the end of its input; the relay has ended
		return out, nil, relayError(h.Name, rep.Error)
	}
	if rep.Framing != msg.RelayFramingV1 {
		// An older relay streams raw: frames would be typed into the
		// shell. Nothing was sent; the end of its input ends its stream.
		mine.Close()
		f.Log.Warn("fleet: relay streams without framing", "host", h.Name, "framing", rep.Framing)
		return out, nil, rpc.Errorf(msg.CodeFailed, "%s: the host's sluice-relay does not frame its input (framing %d, want %d): update it", h.Name, rep.Framing, msg.RelayFramingV1)
	}
	if err := msgpack.Unmarshal(rep.Payload, &out); err != nil {
		mine.Close()
		return out, nil, fmt.Errorf("fleet: open answer: %w", err)
	}
	// The requested size first, before the frontend's first frame: the
	// shell starts at the page's size, as it did on the gateway pty.
	rows, cols := c.Rows, c.Cols
	if rows == 0 || cols == 0 || rows > termsock.MaxSide || cols > termsock.MaxSide {
		rows, cols = 24, 80
	}
	if _, err := mine.Write(termsock.AppendResize(nil, cols, rows)); err != nil {
		mine.Close()
		return out, nil, fmt.Errorf("fleet: stream size: %w", err)
	}
	out.Host = h.Name
	f.Log.Info("fleet: stream", "host", h.Name, "op", c.Op, "user", c.HostGrant.User, "session", out.Session.ID, "mode", out.Mode)
	return out, mine, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

func (f *Fleet) done() {
	f.mu.Lock()
	f.streams--
	f.mu.Unlock()
}

func serviceOf(op string) string {
	if op == msg.OpCreateShellSession {
		return msg.Policy
	}
	return msg.PtyStore
}

func userOf(hg *msg.HostGrant) string {
	if hg == nil {
		return ""
	}
	return hg.User
}

// sshWhy names the likely cause from ssh's stderr, for the caller; the
// whole text is in the log.
func sshWhy(stderr string, err error) string {
	switch {
	case bytes.Contains([]byte(stderr), []byte("Host key verification failed")),
		bytes.Contains([]byte(stderr), []byte("REMOTE HOST IDENTIFICATION HAS CHANGED")),
		bytes.Contains([]byte(stderr), []byte("No ED25519 host key is known")),
		bytes.Contains([]byte(stderr), []byte("host key for")):
		return "host key not pinned or changed"
	case bytes.Contains([]byte(stderr), []byte("Permission denied")):
		return "the relay account refused the gateway's key"
	case bytes.Contains([]byte(stderr), []byte("Connection refused")), bytes.Contains([]byte(stderr), []byte("timed out")),
		bytes.Contains([]byte(stderr), []byte("No route to host")):
		return "host unreachable"
	}
	return err.Error()
}
