package suiterun

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The Browser acknowledges by the page's rule: at once once a quarter of
// the window is unacknowledged, otherwise after its delay; each
// acknowledgement covers everything consumed.
func TestBrowserAcks(t *testing.T) {
	tests := []struct {
		name     string
		window   int
		delay    time.Duration
		frames   []string
		wantAcks []int64 // the acks the frontend sees, in order
	}{
		// Below a quarter nothing goes until the frame that reaches it,
		// whose ack covers the frames before it.
		{"quarter of the window", 40, time.Hour, []string{"abc", "def", "ghi", "0123456789"}, []int64{19}},
		{"each quarter", 40, time.Hour, []string{"0123456789", "abc", "ABCDEFGHIJ"}, []int64{10, 23}},
		// Nothing near a quarter: the delay acknowledges all of it.
		{"after the delay", 1 << 20, time.Millisecond, []string{"abc"}, []int64{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acks := make(chan int64, 16)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer ws.Close()
				ws.WriteMessage(websocket.TextMessage, []byte(`{"t":"hello"}`))
				ws.WriteMessage(websocket.TextMessage, []byte(`{"t":"attached","a":7,"window":`+itoa(tt.window)+`}`))
				for _, f := range tt.frames {
					ws.WriteMessage(websocket.BinaryMessage, []byte(f))
				}
				for {
					_, p, err := ws.ReadMessage()
					if err != nil {
						return
					}
					var m struct {
						T string
						A float64
						N int64
					}
					if json.Unmarshal(p, &m) != nil || m.T != "ack" || m.A != 7 {
						t.Errorf("unexpected message %s", p)
						continue
					}
					acks <- m.N
				}
			}))
			defer srv.Close()
			ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newBrowser(ws)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			b.mu.Lock()
			b.ackDelay = tt.delay
			b.mu.Unlock()
			if _, err := b.Expect("attached"); err != nil {
				t.Fatal(err)
			}
			last := tt.frames[len(tt.frames)-1]
			if _, err := b.Until(last); err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.wantAcks {
				select {
				case got := <-acks:
					if got != want {
						t.Fatalf("ack %d: n=%d, want %d (all wanted: %v)", i, got, want, tt.wantAcks)
					}
				case <-time.After(Wait):
					t.Fatalf("ack %d (n=%d) never came", i, want)
				}
			}
			// An ack of the last frame on its own would have come right
			// after the one wanted last; with an hour's delay none may.
			if tt.delay == time.Hour {
				select {
				case got := <-acks:
					t.Fatalf("extra ack n=%d", got)
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
