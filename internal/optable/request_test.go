package optable

import (
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
)

// FuzzRequestOf: what the envelope's fast path accepts, msgpack.Unmarshal
// accepts too (after rpc's well-formedness check) and makes the same
// msg.Request of; and every envelope a client encodes takes the fast path.
func FuzzRequestOf(f *testing.F) {
	for _, r := range []msg.Request{
		{Op: msg.OpPtyList},
		{Op: msg.OpPtyList, Args: []byte{0x80}},
		{Op: msg.OpPtyGet, Args: []byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0xc0}},
		{Op: string(make([]byte, 40)), Args: []byte{0xc0}},
		{Op: string(make([]byte, 300)), Args: []byte{0x01}},
	} {
		b, err := msgpack.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x82\xa2op\xa1x\xa4args\x91"))         // truncated args
	f.Add([]byte("\x82\xa2op\xa1x\xa4args\x01\x02"))     // bytes after the map
	f.Add([]byte("\x82\xa2op\xa1x\xa4args\xdb\xff\xff")) // a length claim
	f.Add([]byte("\x82\xa4args\x80\xa2op\xa1x"))         // the other order
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := requestOf(b)
		var slow msg.Request
		serr := (&rpc.Call{Body: b}).Decode(&slow)
		if ok {
			if serr != nil {
				t.Fatalf("fast path took %x, msgpack refuses it: %v", b, serr)
			}
			if fast.Op != slow.Op || !bytes.Equal(fast.Args, slow.Args) {
				t.Fatalf("%x: fast %q %x, msgpack %q %x", b, fast.Op, fast.Args, slow.Op, slow.Args)
			}
		}
		// An envelope as clients encode it always takes the fast path
		// (the seeds are such; a fuzzed body is when it re-encodes the same).
		if serr == nil && len(slow.Op) < 256 && rpc.CheckMsgpack(slow.Args) == nil {
			enc, err := msgpack.Marshal(slow)
			if err == nil && bytes.Equal(enc, b) && !ok {
				t.Fatalf("%x: a client's own encoding missed the fast path", b)
			}
		}
	})
}
