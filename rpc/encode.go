package rpc

import (
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// appendWriter lets a pooled msgpack encoder write straight into a frame
// buffer, saving the intermediate slice msgpack.Marshal would allocate.
type appendWriter struct {
	b   []byte
	enc *msgpack.Encoder
}

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// WriteByte and WriteString keep msgpack from wrapping us in a bufio.Writer.
func (w *appendWriter) WriteByte(c byte) error {
	w.b = append(w.b, c)
	return nil
}

func (w *appendWriter) WriteString(s string) (int, error) {
	w.b = append(w.b, s...)
	return len(s), nil
}

func (w *appendWriter) encode(v any) error { return w.enc.Encode(v) }

var awPool = sync.Pool{New: func() any {
	w := &appendWriter{}
	w.enc = msgpack.NewEncoder(w)
	return w
}}

func getAppendWriter(b []byte) *appendWriter {
	w := awPool.Get().(*appendWriter)
	w.b = b
	w.enc.Reset(w)
	return w
}

func putAppendWriter(w *appendWriter) {
	w.b = nil
	awPool.Put(w)
}
