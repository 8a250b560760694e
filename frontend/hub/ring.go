package hub

// ring is a session's scrollback: the last max bytes of pty output, addressed
// by absolute stream offset. It starts empty and grows by doubling as output
// arrives, so an idle session with a prompt on screen costs a few hundred
// bytes, not the whole ring.
type ring struct {
	buf  []byte
	max  int
	n    int   // valid bytes, the last n before head
	w    int   // index in buf where the next byte goes
	head int64 // absolute offset just past the newest byte
}

const ringMinAlloc = 512

// start is the absolute offset of the oldest byte still held.
func (r *ring) start() int64 { return r.head - int64(r.n) }

func (r *ring) write(p []byte) {
	defer func(n int) { r.head += int64(n) }(len(p))
	if len(p) >= r.max {
		// Only the tail fits.
		if len(r.buf) != r.max {
			r.buf = make([]byte, r.max)
		}
		copy(r.buf, p[len(p)-r.max:])
		r.n, r.w = r.max, 0
		return
	}
	if need := r.n + len(p); need > len(r.buf) && len(r.buf) < r.max {
		size := max(len(r.buf)*2, ringMinAlloc)
		for size < need {
			size *= 2
		}
		r.grow(min(size, r.max))
	}
	for len(p) > 0 {
		k := copy(r.buf[r.w:], p)
		p = p[k:]
		r.w = (r.w + k) % len(r.buf)
		r.n = min(r.n+k, len(r.buf))
	}
}

// grow reallocates to size bytes, keeping the held bytes in order.
func (r *ring) grow(size int) {
	if size == len(r.buf) {
		return
	}
	nb := make([]byte, size)
	keep := min(r.n, size)
	r.read(r.head-int64(keep), nb[:keep])
	r.buf, r.n, r.w = nb, keep, keep%size
}

// read copies the bytes at absolute offset off into dst; the caller makes
// sure [off, off+len(dst)) lies within [start, head).
func (r *ring) read(off int64, dst []byte) {
	if len(dst) == 0 {
		return
	}
	back := int(r.head - off) // distance from the write index
	i := r.w - back
	if i < 0 {
		i += len(r.buf)
	}
	k := copy(dst, r.buf[i:])
	copy(dst[k:], r.buf)
}

// size is the bytes allocated, for memory accounting.
func (r *ring) size() int { return len(r.buf) }
