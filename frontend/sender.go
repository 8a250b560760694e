package frontend

import (
	"sluice/frontend/hub"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// attachment is this connection's view of one session, and its sender.
// There is no sender goroutine while the session is idle: the hub calls
// kick when there may be output, and whoever kicks sends what is ready
// itself as long as the socket takes it without blocking; only a write
// that could block gets a goroutine, which lives until the output is
// drained. An idle session so costs no goroutine here, and a keystroke's
// echo goes out on the pty reader's goroutine without a hand-off.
type attachment struct {
	serial int64
	id     string
	c      *conn
	v      *hub.Viewer

	send    sync.Mutex  // held by whoever is sending for this attachment
	pending atomic.Bool // kicked since the sender last looked
	stopped bool        // guarded by send: detached, exited or failed
}

// minInline is room kept aside beyond the output itself for the control
// messages that may go with it.
const minInline = 512

// tryWriter takes the write lock if it is free and the socket takes n
// more bytes of output without blocking, and says whether it did.
func (c *conn) tryWriter(n int) bool {
	if c.raw == nil || !c.wmu.TryLock() {
		return false
	}
	if sockRoom(c.raw) >= n+minInline {
		return true
	}
	c.wmu.Unlock()
	return false
}

// sockRoom is how many bytes a write to the TCP socket takes now without
// waiting, from the kernel's own accounting (SO_MEMINFO: bytes queued,
// overhead included, against the send buffer). It halves the free space
// because queued bytes are counted with their buffers' overhead, and
// keeps a frame header's worth aside.
func sockRoom(rc syscall.RawConn) int {
	var mi [unix.SK_MEMINFO_VARS]uint32
	room := 0
	rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mi))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e == 0 {
			room = (int(mi[unix.SK_MEMINFO_SNDBUF])-int(mi[unix.SK_MEMINFO_WMEM_QUEUED]))/2 - 64
		}
	})
	return room
}

const frameSize = 32 << 10

// inlineMax is the most output sent on the goroutine that kicked.
const inlineMax = 4 << 10

var frameBufs = sync.Pool{New: func() any { b := make([]byte, frameSize); return &b }}

// kick is the viewer's ready func: the hub calls it when there may be
// something to send, from the pty reader or from whoever acknowledged,
// attached or detached. It never blocks.
func (a *attachment) kick() {
	a.pending.Store(true)
	for a.pending.Load() && a.send.TryLock() {
		if !a.drain(true) {
			return // a goroutine has the sender now
		}
		a.send.Unlock()
	}
}

// drain sends what is ready; the caller holds a.send. Inline, it sends
// only small output that the socket takes at once; otherwise it hands
// a.send to a new goroutine that carries on, and returns false.
func (a *attachment) drain(inline bool) bool {
	// pending is cleared even once stopped, or kick would spin on it.
	for a.pending.Swap(false) && !a.stopped {
		for !a.stopped {
			ok, n := a.v.Ready()
			if !ok {
				break
			}
			// Inline goes only what is small (an echo, a prompt) and only
			// whole: cutting output to the socket's room would make small
			// frames and small acks, and a burst sends faster from a
			// goroutine of its own while the reader reads on (measured by
			// BenchmarkCat100MB).
			if inline && (n > inlineMax || !a.c.tryWriter(n)) {
				a.pending.Store(true)
				go a.carryOn()
				return false
			}
			limit := frameSize
			if inline {
				limit = min(n, frameSize)
			} else {
				a.c.wmu.Lock()
			}
			a.sendOne(limit)
			a.c.wmu.Unlock()
		}
	}
	return true
}

// carryOn is the sender goroutine; it exists only while output is
// waiting for the socket to take it.
func (a *attachment) carryOn() {
	for {
		a.drain(false)
		a.send.Unlock()
		if !a.pending.Load() || !a.send.TryLock() {
			return
		}
	}
}

// sendOne sends one Poll's worth, at most limit bytes of output, with the
// sender and the write lock held. It takes a frame buffer only now, so an
// idle attachment holds none.
func (a *attachment) sendOne(limit int) {
	c := a.c
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	ev, err := a.v.Poll((*bp)[:limit])
	if err == nil && ev.Skipped > 0 {
		err = c.sendLocked(outMsg{"t": "skipped", "a": a.serial, "bytes": ev.Skipped})
	}
	if err == nil && ev.N > 0 {
		err = c.writeLocked(websocket.BinaryMessage, (*bp)[:ev.N])
	}
	if err == nil && ev.Viewers {
		if hs := c.s.hub.Get(a.id); hs != nil {
			err = c.sendLocked(outMsg{"t": "viewers", "a": a.serial, "viewers": hs.Viewers()})
		}
	}
	if err == nil && ev.Mode != "" {
		err = c.sendLocked(outMsg{"t": "mode", "a": a.serial, "id": a.id, "mode": ev.Mode,
			"message": "the owner made this session read-only"})
	}
	if err == nil && ev.Revoked {
		c.sendLocked(outMsg{"t": "revoked", "a": a.serial, "id": a.id, "message": "the owner stopped sharing this session"})
		a.stopped = true
		return
	}
	if err == nil && ev.Kicked != "" {
		// Signed out before the page hears it: once the message is on the
		// wire the page may send its next op, and the reader must already
		// find the grant gone (the sender can be descheduled between the
		// two for as long as the machine likes).
		c.idleOut()
		c.sendLocked(outMsg{"t": "idle", "a": a.serial, "id": a.id, "message": ev.Kicked})
		a.stopped = true
		return
	}
	if err == nil && ev.Detached != "" {
		c.sendLocked(outMsg{"t": "detached", "a": a.serial, "id": a.id, "message": ev.Detached})
		a.stopped = true
		return
	}
	if err == nil && ev.Exited {
		c.sendLocked(outMsg{"t": "exit", "a": a.serial, "id": a.id})
		a.stopped = true
	}
	if err != nil {
		a.stopped = true
	}
}
