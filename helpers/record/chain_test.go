package record

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"lukechampine.com/blake3"
)

// chainHash is keyed BLAKE3: the same sums as blake3.New(32, key) for
// every length around the block and chunk boundaries and many sizes of
// every split, summed after each write as the seal chain is.
func TestChainHashIsBLAKE3(t *testing.T) {
	key := bytes.Repeat([]byte{7, 1, 9, 3}, 8)
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 9*blockSize+3*1024+77)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var lengths []int
	for _, b := range []int{0, 1024, 2048, blockSize, 2 * blockSize, 3 * blockSize, 8 * blockSize} {
		for d := -2; d <= 2; d++ {
			if b+d >= 0 {
				lengths = append(lengths, b+d)
			}
		}
	}
	for _, n := range lengths {
		want := blake3.New(32, key)
		want.Write(data[:n])
		if got := func() []byte { h := newChainHash(key); h.Write(data[:n]); return h.Sum() }(); !bytes.Equal(got, want.Sum(nil)) {
			t.Fatalf("%d bytes in one write: %x, want %x", n, got, want.Sum(nil))
		}
	}
	for _, max := range []int{1, 100, 1024, 5000, sumSIMD + 1, blockSize, 3*blockSize + 5} {
		want, got := blake3.New(32, key), newChainHash(key)
		for off := 0; off < len(data); {
			k := min(len(data)-off, 1+rng.IntN(max))
			want.Write(data[off : off+k])
			got.Write(data[off : off+k])
			off += k
			if !bytes.Equal(got.Sum(), want.Sum(nil)) {
				t.Fatalf("writes of up to %d bytes: differs after %d bytes", max, off)
			}
		}
	}
}
