package admit

import (
	"sync"
	"time"
)

// Rate limits sign-in ceremonies per source address: a token bucket of
// PerMinute tokens, refilled evenly over a minute. It remembers at most
// maxSources addresses; when that many are in use, the ones whose bucket
// has refilled are forgotten, and if none has, all are (an attacker with
// that many addresses gains a refill, not a way to lock others out).
type Rate struct {
	perMinute float64
	now       func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

const maxSources = 16384

// DefaultSignInsPerMinute lets a person retry a failed passkey prompt a
// few times a minute and a script not much more.
const DefaultSignInsPerMinute = 10

// NewRate returns a limiter; perMinute <= 0 allows everything.
func NewRate(perMinute int) *Rate {
	return &Rate{perMinute: float64(perMinute), now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes a token for ip and says whether there was one.
func (r *Rate) Allow(ip string) bool {
	if r == nil || r.perMinute <= 0 {
		return true
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[ip]
	if b == nil {
		if len(r.buckets) >= maxSources {
			r.pruneLocked(now)
		}
		b = &bucket{tokens: r.perMinute, at: now}
		r.buckets[ip] = b
	}
	b.tokens = min(r.perMinute, b.tokens+now.Sub(b.at).Minutes()*r.perMinute)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *Rate) pruneLocked(now time.Time) {
	for ip, b := range r.buckets {
		if b.tokens+now.Sub(b.at).Minutes()*r.perMinute >= r.perMinute {
			delete(r.buckets, ip)
		}
	}
	if len(r.buckets) >= maxSources {
		clear(r.buckets)
	}
}
