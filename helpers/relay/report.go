package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
)

// A stream lives only while the host's ptystore can take it away: the
// 500 ms report is how a policy detach reaches it, so a report that gets
// no answer must not leave the stream running for good. A ptystore that
// is down, hung or refusing every connection as busy is then one the
// detached user would want: the relay cuts the stream once no report was
// answered for MissedReports periods (the shell keeps running; a reattach
// asks ptystore, and its policy, again). A session ptystore no longer
// holds is cut at once: nothing on the host could list, limit or end it.

// MissedReports is how many report periods without an answer end a
// stream: long enough for one slow answer or a ptystore restart's gap,
// short enough that a detach is not outrun for long.
const MissedReports = 4

// ReportTimeout bounds one report: less than the time the stream may go
// without one, so a hung ptystore is noticed within it.
const ReportTimeout = 2 * ReportEvery

// UnansweredNotice and GoneNotice end a stream as DetachedNotice does,
// for a ptystore that did not answer and one that no longer holds the
// session.
const (
	UnansweredNotice = "\r\n[sluice: this host's session store did not answer: stream ended (the shell keeps running; reattach)]\r\n"
	GoneNotice       = "\r\n[sluice: this host's session store no longer holds this session: stream ended]\r\n"
)

// reportVerdict is what one report says about the stream.
type reportVerdict int

const (
	keepStreaming reportVerdict = iota
	cutDetached                 // the host's policy detached it
	cutGone                     // ptystore does not hold it
	cutUnanswered               // no answer for MissedReports periods
)

// reporter reports one streamed session and decides, from the answers
// and their absence, whether the stream may go on.
type reporter struct {
	r      *Relay
	id     string
	every  time.Duration
	lastOK time.Time // the last answered report, or the stream's start
}

func (p *reporter) report(ctx context.Context, now time.Time) (reportVerdict, string) {
	rep, err := p.r.report(ctx, []string{p.id}, nil, min(ReportTimeout, 2*p.every))
	if err != nil {
		silent := time.Since(p.lastOK)
		p.r.Log.Warn("relay: pty-viewers", "host", p.r.Host, "session", p.id, "err", err, "unanswered", silent)
		if silent >= MissedReports*p.every {
			return cutUnanswered, fmt.Sprintf("the host's ptystore answered no report for %v (%v)", silent.Round(time.Millisecond), err)
		}
		return keepStreaming, ""
	}
	p.lastOK = now
	for _, d := range rep.Detached {
		if d == p.id {
			return cutDetached, "detached by the host's policy"
		}
	}
	if rep.Unknown > 0 {
		return cutGone, "the host's ptystore no longer holds the session"
	}
	return keepStreaming, ""
}

// notice is what the channel shows before a cut stream ends.
func (v reportVerdict) notice() string {
	switch v {
	case cutDetached:
		return DetachedNotice
	case cutGone:
		return GoneNotice
	case cutUnanswered:
		return UnansweredNotice
	}
	return ""
}

// report makes one pty-viewers call within timeout.
func (r *Relay) report(ctx context.Context, attached, left []string, timeout time.Duration) (msg.PtyViewersReply, error) {
	var rep msg.PtyViewersReply
	args, err := msgpack.Marshal(msg.PtyViewers{Attached: attached, Left: left})
	if err != nil {
		return rep, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	payload, fds, err := r.call(ctx, msg.PtyStore, msg.OpPtyViewers, nil, args, nil)
	closeAll(fds)
	if err != nil {
		return rep, err
	}
	if err := msgpack.Unmarshal(payload, &rep); err != nil {
		return rep, fmt.Errorf("relay: pty-viewers answer: %w", err)
	}
	return rep, nil
}
