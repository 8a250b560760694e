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
// chain, which is written to in pieces of any size and summed after each.
// blake3.Hasher compresses a write's whole chunks as subtrees aligned to
// the chunks before them, in one goroutine per subtree, which for a
// write starting mid-chunk is many small ones: the recorder's main CPU
// cost after the file write, and goroutines that compete with the shell
// for the cores. Here every 16-chunk block at a 16-chunk boundary is
// compressed in one AVX-512 pass, in the caller's goroutine, a large
// write where it is, without a copy. A block written in small pieces (a
// keystroke's events) is folded in chunk by chunk as Sum needs it, so a
// Sum costs about one chunk, as blake3.Hasher's does.
type chainHash struct {
	key    [8]uint32
	stack  [64][8]uint32 // subtree roots, one per set bit of count
	count  uint64        // chunks in stack: a multiple of 16
	buf    [blockSize]byte
	buflen int
	// The first folded chunks of buf, already compressed: their subtree
	// roots, one per set bit of folded (heights 0 to 3).
	folded int
	low    [4][8]uint32
}

func newChainHash(key []byte) *chainHash {
	h := &chainHash{}
	for i := range h.key {
		h.key[i] = binary.LittleEndian.Uint32(key[i*4:])
	}
	return h
}

const chainFlags = guts.FlagKeyedHash

// Write adds p. A full block is compressed only once a byte follows it:
// the last block holds the root's chunk, which Sum compresses with the
// root flag.
func (h *chainHash) Write(p []byte) {
	if h.buflen > 0 {
		n := copy(h.buf[h.buflen:], p)
		h.buflen += n
		p = p[n:]
		if len(p) == 0 {
			return
		}
		h.flush()
	}
	for len(p) > blockSize {
		h.push(guts.ChainingValue(guts.CompressBuffer((*[blockSize]byte)(p[:blockSize]), blockSize, &h.key, h.count, chainFlags)))
		p = p[blockSize:]
	}
	h.buflen = copy(h.buf[:], p)
}

// flush compresses the full block in buf: in one pass, or, when Sum has
// folded some of its chunks already, the rest of them one by one.
func (h *chainHash) flush() {
	if h.folded == 0 {
		h.push(guts.ChainingValue(guts.CompressBuffer(&h.buf, blockSize, &h.key, h.count, chainFlags)))
	} else {
		for h.folded < guts.MaxSIMD-1 {
			h.fold()
		}
		cv := h.foldCV(h.folded)
		h.folded = 0
		h.push(cv)
	}
	h.buflen = 0
}

// fold compresses buf's next chunk into low.
func (h *chainHash) fold() {
	cv := h.foldCV(h.folded)
	i := 0
	for ; h.folded&(1<<i) != 0; i++ {
	}
	h.low[i] = cv
	h.folded++
}

// foldCV is chunk c of buf merged with the subtrees before it in the
// block that it completes.
func (h *chainHash) foldCV(c int) [8]uint32 {
	cv := guts.ChainingValue(guts.CompressChunk(h.buf[c*guts.ChunkSize:(c+1)*guts.ChunkSize], &h.key, h.count+uint64(c), chainFlags))
	for i := 0; c&(1<<i) != 0; i++ {
		cv = guts.ChainingValue(guts.ParentNode(h.low[i], cv, &h.key, chainFlags))
	}
	return cv
}

// push adds a full block's root, merging the subtrees it completes.
func (h *chainHash) push(cv [8]uint32) {
	i := bits.TrailingZeros64(guts.MaxSIMD)
	for ; h.count&(1<<i) != 0; i++ {
		cv = guts.ChainingValue(guts.ParentNode(h.stack[i], cv, &h.key, chainFlags))
	}
	h.stack[i] = cv
	h.count += guts.MaxSIMD
}

// sumSIMD: a block with more unfolded bytes than this (a large write's
// tail) is summed in one SIMD pass rather than folded chunk by chunk.
const sumSIMD = 4 * guts.ChunkSize

// Sum is the 32-byte hash of everything written so far.
func (h *chainHash) Sum() []byte {
	var n guts.Node
	if h.folded == 0 && h.buflen > sumSIMD {
		// What a large write left: one pass, as flush will do again.
		n = guts.CompressBuffer(&h.buf, h.buflen, &h.key, h.count, chainFlags)
	} else {
		// Every whole chunk but the last is folded in; the last (whole
		// or not) is the root's or the root's rightmost leaf.
		for (h.folded+1)*guts.ChunkSize < h.buflen {
			h.fold()
		}
		last := h.buf[h.folded*guts.ChunkSize : max(h.buflen, h.folded*guts.ChunkSize)]
		n = guts.CompressChunk(last, &h.key, h.count+uint64(h.folded), chainFlags)
		for i := 0; i < 4; i++ {
			if h.folded&(1<<i) != 0 {
				n = guts.ParentNode(h.low[i], guts.ChainingValue(n), &h.key, chainFlags)
			}
		}
	}
	for i := bits.TrailingZeros64(h.count); i < bits.Len64(h.count); i++ {
		if h.count&(1<<i) != 0 {
			n = guts.ParentNode(h.stack[i], guts.ChainingValue(n), &h.key, chainFlags)
		}
	}
	n.Flags |= guts.FlagRoot
	out := guts.WordsToBytes(guts.CompressNode(n))
	return out[:32]
}
