package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// A small Chrome DevTools Protocol client: JSON commands over the
// browser's WebSocket with flattened target sessions. It is all this test
// needs (navigate, evaluate, keys, WebAuthn, screenshot), over the
// WebSocket library the project already has, instead of a driver library
// and its dependency tree.

type cdp struct {
	ws  *websocket.Conn
	wmu sync.Mutex

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan cdpReply
	events  chan cdpEvent
	closed  chan struct{}
}

type cdpReply struct {
	Result json.RawMessage
	Err    error
}

type cdpEvent struct {
	Method    string          `json:"method"`
	Params    json.RawMessage `json:"params"`
	SessionID string          `json:"sessionId"`
}

type browser struct {
	cmd  *exec.Cmd
	conn *cdp
	log  *syncWriter
}

type syncWriter struct {
	mu sync.Mutex
	b  []byte
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

var devtoolsLine = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// launch starts Debian's chromium headless with an empty profile.
func launch(ctx context.Context, exe, profile string) (*browser, error) {
	cmd := exec.CommandContext(ctx, exe,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--window-size=1100,700", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	b := &browser{cmd: cmd, log: &syncWriter{}}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			b.log.Write([]byte(line + "\n"))
			if m := devtoolsLine.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	var url string
	select {
	case url = <-found:
	case <-ctx.Done():
		b.close()
		return nil, fmt.Errorf("chromium did not start its DevTools endpoint: %w\n%s", ctx.Err(), b.log)
	}
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		b.close()
		return nil, fmt.Errorf("dial devtools: %w", err)
	}
	ws.SetReadLimit(64 << 20)
	b.conn = &cdp{ws: ws, waiting: map[int64]chan cdpReply{}, events: make(chan cdpEvent, 256), closed: make(chan struct{})}
	go b.conn.read()
	return b, nil
}

func (b *browser) close() {
	if b.conn != nil {
		b.conn.ws.Close()
	}
	// The whole process group: chromium's zygote and renderers.
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	b.cmd.Wait()
}

func (c *cdp) read() {
	defer close(c.closed)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			for id, ch := range c.waiting {
				ch <- cdpReply{Err: fmt.Errorf("devtools connection closed: %w", err)}
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			return
		}
		var m struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
			cdpEvent
		}
		if err := json.Unmarshal(data, &m); err != nil {
			continue
		}
		if m.ID == 0 {
			select {
			case c.events <- m.cdpEvent:
			default: // nobody is listening for events this test ignores
			}
			continue
		}
		c.mu.Lock()
		ch := c.waiting[m.ID]
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		if ch == nil {
			continue
		}
		r := cdpReply{Result: m.Result}
		if m.Error != nil {
			r.Err = fmt.Errorf("devtools: %s (%d)", m.Error.Message, m.Error.Code)
		}
		ch <- r
	}
}

// call sends one command (to a target session when session != "") and
// decodes its result into out.
func (c *cdp) call(ctx context.Context, session, method string, params, out any) error {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpReply, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	err = c.ws.WriteMessage(websocket.TextMessage, b)
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return fmt.Errorf("%s: %w", method, r.Err)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab, attached with a flattened session.
type page struct {
	c       *cdp
	session string
}

func (b *browser) newPage(ctx context.Context) (*page, error) {
	var t struct {
		TargetID string `json:"targetId"`
	}
	if err := b.conn.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &t); err != nil {
		return nil, err
	}
	var a struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.conn.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": t.TargetID, "flatten": true}, &a); err != nil {
		return nil, err
	}
	p := &page{c: b.conn, session: a.SessionID}
	for _, m := range []string{"Page.enable", "Runtime.enable"} {
		if err := p.call(ctx, m, nil, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *page) call(ctx context.Context, method string, params, out any) error {
	return p.c.call(ctx, p.session, method, params, out)
}

// eval runs a JavaScript expression (awaiting a promise) as if from a user
// gesture, and decodes its value into out.
func (p *page) eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.call(ctx, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true, "userGesture": true,
	}, &r)
	if err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		text := e.Text
		if e.Exception != nil {
			text += " " + e.Exception.Description
		}
		return errors.New("javascript: " + text)
	}
	if out != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

// waitFor polls a JavaScript condition until it is true.
func (p *page) waitFor(ctx context.Context, what, expr string) error {
	var last error
	for {
		var ok bool
		// An exception (the page still loading, say) is "not yet".
		err := p.eval(ctx, "Boolean("+expr+")", &ok)
		if err != nil && !strings.HasPrefix(err.Error(), "javascript:") {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		last = err
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// typeText types text into the focused element, then Enter when enter.
func (p *page) typeText(ctx context.Context, text string, enter bool) error {
	if err := p.call(ctx, "Input.insertText", map[string]any{"text": text}, nil); err != nil {
		return err
	}
	if !enter {
		return nil
	}
	for _, typ := range []string{"keyDown", "keyUp"} {
		ev := map[string]any{"type": typ, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
		if typ == "keyDown" {
			ev["text"] = "\r"
		}
		if err := p.call(ctx, "Input.dispatchKeyEvent", ev, nil); err != nil {
			return err
		}
	}
	return nil
}

func (p *page) screenshot(ctx context.Context, path string) error {
	var r struct {
		Data []byte `json:"data"` // base64 in JSON, decoded by encoding/json
	}
	if err := p.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		return err
	}
	return os.WriteFile(path, r.Data, 0o644)
}
