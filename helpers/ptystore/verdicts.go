package ptystore

import (
	"sync"
	"time"

	"sluice/msg"
)

// VerdictCache keeps the policy helper's allow verdicts on attaches for a
// short time, so that an attach costs a stat of the policy file rather
// than an Accept=yes start of sluice-policy (issue 15: 7 ms of a 7.3 ms
// pty-get).
//
// That is sound because a verdict is a function of the policy file's
// text and of the names asked about, nothing else (docs/policy.md: groups
// are the file's own), and the key holds both: the file's identity (dev,
// inode, size, mtime, ctime), stat'ed before policy was asked and again
// on every use, and the exact question (grant, session, owner, unix user,
// machine, mode, viewer). What the cache does not take over, ptystore
// does on every call as before: the grant's MAC, expiry and the
// revocation list (Handler.verify). Only allows are kept; a refusal or a
// policy that cannot be asked is never remembered. docs/threat-model.md
// weighs it.
type VerdictCache struct {
	Path string        // the policy file the policy helper reads
	TTL  time.Duration // how long a verdict is used at most
	// Racy: a file changed less than this long before its stat is not
	// trusted to show its next change (timestamps are coarse, an edit in
	// place may keep the size), so no verdict on it is kept.
	Racy time.Duration
	Max  int // entries at most; a full cache starts over

	mu       sync.Mutex
	m        map[verdictKey]verdictEntry
	inflight map[verdictKey]chan struct{}
}

// DefaultVerdictTTL and DefaultVerdictRacy are sluice-ptystore's defaults.
const (
	DefaultVerdictTTL   = 2 * time.Second
	DefaultVerdictRacy  = 100 * time.Millisecond
	defaultVerdictCache = 4096
)

type verdictKey struct {
	grant                                      string // the whole grant, MAC included
	id, owner, unixUser, machine, mode, viewer string
}

type verdictEntry struct {
	file   fileID
	until  time.Time
	limits msg.Limits
}

func grantKey(g msg.Grant) string {
	b := make([]byte, 0, len(g.User)+len(g.Credential)+len(g.Nonce)+len(g.MAC)+40)
	for _, p := range [][]byte{[]byte(g.User), g.Credential, g.Nonce, g.MAC} {
		b = append(b, byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	for _, n := range []int64{g.Issued, g.Expires} {
		for i := range 8 {
			b = append(b, byte(n>>(8*i)))
		}
	}
	return string(b)
}

func newVerdictKey(g msg.Grant, info msg.SessionInfo, mode string) verdictKey {
	return verdictKey{grant: grantKey(g), id: info.ID, owner: info.Owner, unixUser: info.UnixUser,
		machine: info.Machine, mode: mode, viewer: g.User}
}

// stat is the policy file's identity now.
func (c *VerdictCache) stat() fileID { return statID(c.Path) }

// get returns the kept limits of an allow for k, if the file is still the
// one it was asked on and the verdict is young enough.
func (c *VerdictCache) get(k verdictKey, now time.Time) (msg.Limits, bool) {
	if c == nil {
		return msg.Limits{}, false
	}
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) {
		return msg.Limits{}, false
	}
	if c.stat() != e.file {
		return msg.Limits{}, false
	}
	return e.limits, true
}

// put keeps an allow that policy gave while the file was f (stat'ed
// before asking); now is the handler's clock, for the TTL.
func (c *VerdictCache) put(k verdictKey, f fileID, now time.Time, limits msg.Limits) {
	if c == nil || c.TTL <= 0 || f.missing || f.failed {
		return
	}
	// The file's timestamps are the kernel's wall clock, so this is too.
	changed := time.Unix(f.ctime.Unix())
	if m := time.Unix(f.mtime.Unix()); m.After(changed) {
		changed = m
	}
	if time.Since(changed) < c.Racy {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	max := c.Max
	if max <= 0 {
		max = defaultVerdictCache
	}
	if c.m == nil || len(c.m) >= max {
		c.m = make(map[verdictKey]verdictEntry)
	}
	c.m[k] = verdictEntry{file: f, until: now.Add(c.TTL), limits: limits}
}

// begin makes the caller the one to ask policy about k, or, when another
// call is asking it already, returns that call's channel, closed when it
// is done: a burst of attaches to one session (a thousand pages reloading)
// then costs one policy process, not one each. A waiter still takes the
// answer only through get, so only a kept allow on an unchanged file.
func (c *VerdictCache) begin(k verdictKey) (wait chan struct{}, leader bool) {
	if c == nil {
		return nil, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.inflight[k]; ok {
		return ch, false
	}
	if c.inflight == nil {
		c.inflight = make(map[verdictKey]chan struct{})
	}
	ch := make(chan struct{})
	c.inflight[k] = ch
	return ch, true
}

// end is the asking call's: the answer is kept (or not), waiters go on.
func (c *VerdictCache) end(k verdictKey, ch chan struct{}) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.inflight, k)
	c.mu.Unlock()
	close(ch)
}

// clear forgets every verdict: a recheck is an admin saying "ask again".
func (c *VerdictCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
