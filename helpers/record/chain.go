package record

import (
	"encoding/binary"
	"math/bits"

	"lukechampine.com/blake3/guts"
)

// blockSize is what one SIMD pass compresses: 16 chunks (AVX-512).
const blockSize = guts.MaxSIMD * guts.ChunkSize

// chainHash is keyed BLAKE3, the same function as blake3.New(32, key)
// (chain_test.go checks it against that for every split), for the seal
// chain, which is written to in large pieces and summed after each.
// blake3.Hasher compresses a write's whole chunks as subtrees aligned to
// the chunks before them, in one goroutine per subtree, which for a
// write starting mid-chunk is many small ones: the recorder's main CPU
// cost after the file write, and goroutines that compete with the shell
// for the cores. Here every compression is a whole 16-chunk block at a
// 16-chunk boundary (one AVX-512 pass), in the caller's goroutine, and a
// large write is compressed where it is, without a copy.
type chainHash struct {
	key    [8]uint32
	stack  [64][8]uint32 // subtree roots, one per set bit of counter
	count  uint64        // chunks compressed into stack: a multiple of 16
	buf    [blockSize]byte
	buflen int
}

func newChainHash(key []byte) *chainHash {
	h := &chainHash{}
	for i := range h.key {
		h.key[i] = binary.LittleEndian.Uint32(key[i*4:])
	}
	return h
}

// Write adds p. A full block is compressed only once a byte follows it:
// the last block is the root's, which Sum compresses with the root flag.
func (h *chainHash) Write(p []byte) {
	if h.buflen > 0 {
		n := copy(h.buf[h.buflen:], p)
		h.buflen += n
		p = p[n:]
		if len(p) == 0 {
			return
		}
		h.push(&h.buf)
		h.buflen = 0
	}
	for len(p) > blockSize {
		h.push((*[blockSize]byte)(p[:blockSize]))
		p = p[blockSize:]
	}
	h.buflen = copy(h.buf[:], p)
}

// push compresses a whole block and merges it into the stack.
func (h *chainHash) push(b *[blockSize]byte) {
	cv := guts.ChainingValue(guts.CompressBuffer(b, blockSize, &h.key, h.count, guts.FlagKeyedHash))
	// The block's subtree has height 4 (16 chunks); it completes those
	// whose bits of count carry.
	i := bits.TrailingZeros64(guts.MaxSIMD)
	for ; h.count&(1<<i) != 0; i++ {
		cv = guts.ChainingValue(guts.ParentNode(h.stack[i], cv, &h.key, guts.FlagKeyedHash))
	}
	h.stack[i] = cv
	h.count += guts.MaxSIMD
}

// Sum is the 32-byte hash of everything written so far; h is unchanged.
func (h *chainHash) Sum() []byte {
	n := guts.CompressBuffer(&h.buf, h.buflen, &h.key, h.count, guts.FlagKeyedHash)
	for i := bits.TrailingZeros64(h.count); i < bits.Len64(h.count); i++ {
		if h.count&(1<<i) != 0 {
			n = guts.ParentNode(h.stack[i], guts.ChainingValue(n), &h.key, guts.FlagKeyedHash)
		}
	}
	n.Flags |= guts.FlagRoot
	out := guts.WordsToBytes(guts.CompressNode(n))
	return out[:32]
}
