package suiterun

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"sluice/tests/softauthn"
)

// Browser is one page: a WebSocket to the frontend that acknowledges pty
// output once it is consumed (by Until or Stream), as the page does once
// xterm.js has parsed it. Acknowledging on receipt instead would make the
// frontend's window meaningless: under load the page's queue, not the
// frontend, would hold the backlog, and a page many frames behind would
// look alive to the frontend. It acknowledges by the page's rule (see
// consumed): once a quarter of the window is unacknowledged, or AckDelay
// after the first byte consumed since the last acknowledgement.
// Its methods return errors rather than fail a test, so they can run in
// many goroutines at once.
type Browser struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	msgs chan map[string]any
	out  chan frame
	buf  []byte // output read and not yet consumed by Until
	User string

	mu       sync.Mutex
	att      float64
	window   int64 // the attachment's window, from "attached"
	total    int64 // consumed since "attached"
	acked    int64 // the last acknowledgement sent
	ackTimer *time.Timer
	ackArmed bool
	ackDelay time.Duration // AckDelay
	err      error         // why the reader stopped
}

// AckDelay is the longest the page holds back an acknowledgement of what
// it has consumed (frontend/web/static/app.js, ACK_DELAY_MS).
const AckDelay = 20 * time.Millisecond

// defaultWindow is the page's window until "attached" says otherwise.
const defaultWindow = 64 << 10

// ErrClosed: the frontend closed the WebSocket (or died).
var ErrClosed = errors.New("suiterun: websocket closed")

// Dial opens the page's WebSocket with the browser's Origin and waits for
// the frontend's hello.
func (s *Suite) Dial() (*Browser, error) {
	h := http.Header{}
	h.Set("Origin", s.Origin)
	d := websocket.Dialer{HandshakeTimeout: Wait}
	ws, _, err := d.Dial(s.URL, h)
	if err != nil {
		return nil, fmt.Errorf("suiterun: dial %s: %w", s.URL, err)
	}
	return newBrowser(ws)
}

func newBrowser(ws *websocket.Conn) (*Browser, error) {
	b := &Browser{ws: ws, msgs: make(chan map[string]any, 64), out: make(chan frame, 256), ackDelay: AckDelay, window: defaultWindow}
	go b.read()
	if _, err := b.Expect("hello"); err != nil {
		ws.Close()
		return nil, err
	}
	return b, nil
}

// Close closes the WebSocket.
func (b *Browser) Close() error { return b.ws.Close() }

func (b *Browser) read() {
	defer close(b.msgs)
	defer close(b.out)
	var scratch []byte
	for {
		var typ int
		var data []byte
		var err error
		typ, scratch, err = readMessage(b.ws, scratch[:0])
		if err == nil {
			// A message of its own size, as a browser hands the page an
			// ArrayBuffer per message; the consumer may keep it.
			data = append([]byte(nil), scratch...)
		}
		if err != nil {
			b.mu.Lock()
			b.err = err
			b.mu.Unlock()
			return
		}
		if typ == websocket.BinaryMessage {
			b.mu.Lock()
			att := b.att
			b.mu.Unlock()
			b.out <- frame{att: att, p: data}
			continue
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m["t"] == "attached" {
			// "attached" comes before any frame of its attachment, so the
			// acknowledged count restarts here, as in the page.
			b.mu.Lock()
			b.att, _ = m["a"].(float64)
			b.total, b.acked = 0, 0
			b.window = defaultWindow
			if w, ok := m["window"].(float64); ok && w > 0 {
				b.window = int64(w)
			}
			b.mu.Unlock()
		}
		b.msgs <- m
	}
}

// readMessage reads the next message into buf, grown as needed: unlike
// ws.ReadMessage it does not grow a fresh buffer from 512 bytes for each
// frame of output, whose garbage would load the cores the frontend
// shares with this process.
func readMessage(ws *websocket.Conn, buf []byte) (int, []byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return 0, buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return typ, buf, nil
		}
		if err != nil {
			return 0, buf, err
		}
	}
}

// frame is pty output with the attachment it came for.
type frame struct {
	att float64
	p   []byte
}

// consumed counts f as consumed, unless it belongs to an attachment
// since replaced, and acknowledges by the page's rule: at once when a
// quarter of the window is unacknowledged, so the frontend never waits on
// an acknowledgement held back, and otherwise within AckDelay, so a
// keystroke's echo costs no acknowledgement of its own (the frontend's
// wake-up and the page's message) while typing goes on, and the frontend
// hears of everything consumed soon after output stops.
func (b *Browser) consumed(f frame) {
	b.mu.Lock()
	if f.att != b.att {
		b.mu.Unlock()
		return
	}
	b.total += int64(len(f.p))
	if b.total-b.acked >= b.window/4 {
		ack := b.ackLocked()
		b.mu.Unlock()
		b.Send(ack)
		return
	}
	if !b.ackArmed && b.total > b.acked {
		b.ackArmed = true
		if b.ackTimer == nil {
			b.ackTimer = time.AfterFunc(b.ackDelay, b.ackLate)
		} else {
			b.ackTimer.Reset(b.ackDelay)
		}
	}
	b.mu.Unlock()
}

func (b *Browser) ackLate() {
	b.mu.Lock()
	b.ackArmed = false
	if b.total <= b.acked {
		b.mu.Unlock()
		return
	}
	ack := b.ackLocked()
	b.mu.Unlock()
	b.Send(ack)
}

// ackLocked is the acknowledgement of everything consumed. It is sent
// after b.mu is let go (a send may wait on the frontend, which may be
// waiting for the reader, which takes b.mu), so two may cross on the
// way; the frontend keeps the highest.
func (b *Browser) ackLocked() map[string]any {
	b.acked = b.total
	return map[string]any{"t": "ack", "a": b.att, "n": b.total}
}

// Send writes one control message.
func (b *Browser) Send(m map[string]any) error {
	p, err := json.Marshal(m)
	if err != nil {
		return err
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.ws.SetWriteDeadline(time.Now().Add(Wait))
	return b.ws.WriteMessage(websocket.TextMessage, p)
}

// Type sends keystrokes to the attached session.
func (b *Browser) Type(s string) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.ws.SetWriteDeadline(time.Now().Add(Wait))
	return b.ws.WriteMessage(websocket.BinaryMessage, []byte(s))
}

// RemoteError is an {"t":"error"} message from the frontend.
type RemoteError struct{ Op, Code, Message string }

func (e *RemoteError) Error() string {
	return fmt.Sprintf("frontend: %s: %s: %s", e.Op, e.Code, e.Message)
}

// ReadErr is why the WebSocket stopped reading (nil while it reads): a
// *websocket.CloseError with code 1006 when the frontend died.
func (b *Browser) ReadErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *Browser) closedErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Errorf("%w: %v", ErrClosed, b.err)
}

// Expect reads control messages until one of type typ. An error message
// on the way is returned as a *RemoteError.
func (b *Browser) Expect(typ string) (map[string]any, error) {
	deadline := time.After(Wait)
	for {
		select {
		case m, ok := <-b.msgs:
			if !ok {
				return nil, b.closedErr()
			}
			switch m["t"] {
			case typ:
				return m, nil
			case "error":
				return nil, &RemoteError{Op: str(m["op"]), Code: str(m["code"]), Message: str(m["message"])}
			}
		case <-deadline:
			return nil, fmt.Errorf("suiterun: no %q from the frontend within %v", typ, Wait)
		}
	}
}

func str(v any) string { s, _ := v.(string); return s }

// Register creates a passkey on a with an enrollment token.
func (b *Browser) Register(a *softauthn.Authenticator, token string) error {
	if err := b.Send(map[string]any{"t": "register-begin", "token": token}); err != nil {
		return err
	}
	opts, err := b.Expect("register-options")
	if err != nil {
		return err
	}
	cred, err := a.Register(rawJSON(opts["options"]))
	if err != nil {
		return err
	}
	if err := b.Send(map[string]any{"t": "register-finish", "credential": json.RawMessage(cred)}); err != nil {
		return err
	}
	_, err = b.Expect("registered")
	return err
}

// SignIn runs the sign-in ceremony with a.
func (b *Browser) SignIn(a *softauthn.Authenticator) error {
	if err := b.Send(map[string]any{"t": "login-begin"}); err != nil {
		return err
	}
	opts, err := b.Expect("login-options")
	if err != nil {
		return err
	}
	as, err := a.Login(rawJSON(opts["options"]))
	if err != nil {
		return err
	}
	if err := b.Send(map[string]any{"t": "login-finish", "assertion": json.RawMessage(as)}); err != nil {
		return err
	}
	m, err := b.Expect("signed-in")
	if err != nil {
		return err
	}
	b.User = str(m["user"])
	return nil
}

// Create opens a root shell on the host and returns its session ID once
// attached.
func (b *Browser) Create() (string, error) {
	if err := b.Send(map[string]any{"t": "create", "machine": ".host", "user": "root", "cols": 120, "rows": 40}); err != nil {
		return "", err
	}
	return b.attached()
}

// Attach views session id.
func (b *Browser) Attach(id string) (string, error) {
	if err := b.Send(map[string]any{"t": "attach", "id": id, "cols": 120, "rows": 40}); err != nil {
		return "", err
	}
	return b.attached()
}

func (b *Browser) attached() (string, error) {
	m, err := b.Expect("attached")
	if err != nil {
		return "", err
	}
	b.buf = b.buf[:0]
	sess, _ := m["session"].(map[string]any)
	return str(sess["id"]), nil
}

// List returns the IDs of the signed-in user's sessions.
func (b *Browser) List() ([]string, error) {
	if err := b.Send(map[string]any{"t": "list"}); err != nil {
		return nil, err
	}
	m, err := b.Expect("sessions")
	if err != nil {
		return nil, err
	}
	var ids []string
	list, _ := m["sessions"].([]any)
	for _, s := range list {
		if sm, ok := s.(map[string]any); ok {
			ids = append(ids, str(sm["id"]))
		}
	}
	return ids, nil
}

// Target is a shell the policy offers, as the frontend lists it: User or
// Machine "*" (Pattern) stands for any.
type Target struct {
	User    string `json:"user"`
	Machine string `json:"machine"`
	Pattern bool   `json:"pattern"`
}

// Targets asks which shells the policy offers the signed-in user, in rule
// order; truncated says the policy offers more than are listed.
func (b *Browser) Targets() (ts []Target, truncated bool, err error) {
	if err := b.Send(map[string]any{"t": "targets"}); err != nil {
		return nil, false, err
	}
	m, err := b.Expect("targets")
	if err != nil {
		return nil, false, err
	}
	list, ok := m["targets"].([]any)
	if !ok {
		// The page relies on an array, empty when nothing is allowed.
		return nil, false, fmt.Errorf("suiterun: targets is %T, not a list: %v", m["targets"], m)
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return nil, false, fmt.Errorf("suiterun: targets: %w", err)
	}
	if err := json.Unmarshal(raw, &ts); err != nil {
		return nil, false, fmt.Errorf("suiterun: targets %s: %w", raw, err)
	}
	truncated, _ = m["truncated"].(bool)
	return ts, truncated, nil
}

// Until reads terminal output until want appears and returns everything
// up to and including it; the rest stays for the next call.
func (b *Browser) Until(want string) ([]byte, error) { return b.UntilWithin(want, Wait) }

// UntilWithin is Until with its own bound.
func (b *Browser) UntilWithin(want string, d time.Duration) ([]byte, error) {
	deadline := time.After(d)
	for {
		if i := bytes.Index(b.buf, []byte(want)); i >= 0 {
			got := append([]byte(nil), b.buf[:i+len(want)]...)
			b.buf = append(b.buf[:0], b.buf[i+len(want):]...)
			return got, nil
		}
		select {
		case f, ok := <-b.out:
			if !ok {
				return nil, fmt.Errorf("waiting for %q: %w; output %q", want, b.closedErr(), tail(b.buf))
			}
			b.buf = append(b.buf, f.p...)
			b.consumed(f)
		case <-deadline:
			return nil, fmt.Errorf("suiterun: no %q in the output within %v; output %q", want, d, tail(b.buf))
		}
	}
}

// Stream hands the attached session's output to fn, starting with what
// Until had read past its match, until fn returns false. Control messages
// go to onMsg meanwhile (nil ignores them), so a long stream never stalls
// the reader on a full message queue. It returns the connection's error if
// it closes first, or an error after Wait without any output.
func (b *Browser) Stream(fn func([]byte) bool, onMsg func(map[string]any)) error {
	idle := time.NewTimer(Wait)
	defer idle.Stop()
	if len(b.buf) > 0 {
		p := b.buf
		b.buf = nil
		if !fn(p) {
			return nil
		}
	}
	for {
		select {
		case f, ok := <-b.out:
			if !ok {
				return b.closedErr()
			}
			more := fn(f.p)
			b.consumed(f)
			if !more {
				return nil
			}
			idle.Reset(Wait)
		case m, ok := <-b.msgs:
			if !ok {
				return b.closedErr()
			}
			if onMsg != nil {
				onMsg(m)
			}
		case <-idle.C:
			return fmt.Errorf("suiterun: no output for %v while streaming", Wait)
		}
	}
}

// Ready waits until the attached session's shell runs what is typed: a
// login shell may take a while through its profile before it reads its
// first line. The probe is typed again every two seconds, in case a shell
// starting up dropped what was typed ahead; extra answers do no harm.
func (b *Browser) Ready() error {
	deadline := time.Now().Add(Wait)
	for {
		if err := b.Type("echo \"<rea\"\"dy>\"\n"); err != nil {
			return err
		}
		_, err := b.UntilWithin("<ready>", 2*time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		if errors.Is(err, ErrClosed) {
			return err
		}
	}
}

// Run types a command line and waits for want in its output. Write the
// expected text so that the echoed command line cannot match it (say
// `echo $((6*7))` and want "42").
func (b *Browser) Run(line, want string) error {
	if err := b.Type(line + "\n"); err != nil {
		return err
	}
	_, err := b.Until(want)
	return err
}

func tail(b []byte) string {
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return strings.ToValidUTF8(string(b), "?")
}

func rawJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
