package frontend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sluice/msg"
)

// RecordingInfo is a recording as the page lists it.
type RecordingInfo struct {
	ID        string `json:"id"`
	User      string `json:"user"`    // unix user, from the title user@machine
	Machine   string `json:"machine"` // from the title
	Width     int    `json:"width"`
	Height    int    `json:"height"`
	Started   int64  `json:"started"`             // unix ms, from the header's timestamp
	Size      int64  `json:"size"`                // bytes
	Requester string `json:"requester,omitempty"` // the signed-in sluice user, when known
	Live      bool   `json:"live,omitempty"`      // still being written
}

// RecordingSource is where the page's recordings come from, on behalf of
// a grant: a list, and one recording's asciicast v2 text. It decides who
// may see what. The real one is the recording helper
// (Helpers.Recordings); DirRecordings is a development stand-in.
type RecordingSource interface {
	List(ctx context.Context, g msg.Grant) ([]RecordingInfo, error)
	Read(ctx context.Context, g msg.Grant, id string) ([]byte, error)
}

// MaxRecordingToPage bounds what one "recording" message carries; a
// longer recording is exported with sluicectl instead.
const MaxRecordingToPage = 16 << 20

// maxRecordings bounds the page's list.
const maxRecordings = 1000

// errTooLarge is a recording over MaxRecordingToPage.
var errTooLarge = fmt.Errorf("recording larger than %d MiB: export it with sluicectl recordings export", MaxRecordingToPage>>20)

// DirRecordings serves the .cast files of a directory to auditors, each
// only if policy's audit scope for the grant covers the machine its title
// names. It is a development stand-in for the recording helper's read op:
// the frontend reads the files itself, so a compromised frontend reads
// them all; the helper's op will not have that weakness.
type DirRecordings struct {
	Dir   string
	Scope func(ctx context.Context, g msg.Grant) (msg.AuditScopeReply, error)
}

func (d *DirRecordings) scope(ctx context.Context, g msg.Grant) (msg.AuditScopeReply, error) {
	sc, err := d.Scope(ctx, g)
	if err != nil {
		return sc, err
	}
	if len(sc.Machines) == 0 {
		return sc, errNotAuditor{g.User}
	}
	return sc, nil
}

type errNotAuditor struct{ user string }

func (e errNotAuditor) Error() string { return e.user + " may not audit sessions" }

func (d *DirRecordings) List(ctx context.Context, g msg.Grant) ([]RecordingInfo, error) {
	sc, err := d.scope(ctx, g)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		return nil, fmt.Errorf("frontend: recordings: %w", err)
	}
	out := []RecordingInfo{}
	for _, e := range ents {
		if len(out) >= maxRecordings {
			break
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".cast") {
			continue
		}
		info, err := readHeader(filepath.Join(d.Dir, e.Name()))
		if err != nil || !sc.Covers(info.Machine) {
			continue
		}
		info.ID = strings.TrimSuffix(e.Name(), ".cast")
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b RecordingInfo) int { return int(b.Started - a.Started) })
	return out, nil
}

func (d *DirRecordings) Read(ctx context.Context, g msg.Grant, id string) ([]byte, error) {
	sc, err := d.scope(ctx, g)
	if err != nil {
		return nil, err
	}
	if id == "" || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") {
		return nil, os.ErrNotExist
	}
	path := filepath.Join(d.Dir, id+".cast")
	info, err := readHeader(path)
	if err != nil || !sc.Covers(info.Machine) {
		return nil, os.ErrNotExist // out of scope reads as absent
	}
	if info.Size > MaxRecordingToPage {
		return nil, errTooLarge
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxRecordingToPage))
}

// readHeader reads an asciicast v2 header line and the file's size.
func readHeader(path string) (RecordingInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return RecordingInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return RecordingInfo{}, errors.New("not a regular file")
	}
	line, err := bufio.NewReaderSize(io.LimitReader(f, 64<<10), 64<<10).ReadSlice('\n')
	if err != nil {
		return RecordingInfo{}, fmt.Errorf("header: %w", err)
	}
	var h struct {
		Version   int     `json:"version"`
		Width     int     `json:"width"`
		Height    int     `json:"height"`
		Timestamp float64 `json:"timestamp"`
		Title     string  `json:"title"`
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Version != 2 {
		return RecordingInfo{}, errors.New("not an asciicast v2 header")
	}
	user, machine, ok := strings.Cut(h.Title, "@")
	if !ok || machine == "" {
		return RecordingInfo{}, errors.New("title is not user@machine")
	}
	return RecordingInfo{User: user, Machine: machine, Width: h.Width, Height: h.Height,
		Started: int64(h.Timestamp * 1000), Size: st.Size()}, nil
}

// recordingOp answers the page's "recordings" and "recording" messages.
func (c *conn) recordingOp(m inMsg, g msg.Grant) {
	src := c.s.cfg.Recordings
	if src == nil {
		c.fail(m.T, msg.CodeFailed, "recordings are not available on this server")
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	if m.T == "recordings" {
		list, err := src.List(ctx, g)
		if err != nil {
			c.recordingErr(m.T, err)
			return
		}
		c.send(outMsg{"t": "recordings", "recordings": list})
		return
	}
	b, err := src.Read(ctx, g, m.ID)
	if err != nil {
		c.recordingErr(m.T, err)
		return
	}
	c.log.Info("recording sent to an auditor", "recording", m.ID, "bytes", len(b))
	c.send(outMsg{"t": "recording", "id": m.ID, "cast": string(b)})
}

func (c *conn) recordingErr(op string, err error) {
	var na errNotAuditor
	switch {
	case errors.As(err, &na):
		c.fail(op, msg.CodeDenied, na.Error())
	case errors.Is(err, os.ErrNotExist):
		c.fail(op, msg.CodeNotFound, "no such recording")
	case errors.Is(err, errTooLarge):
		c.fail(op, msg.CodeFailed, err.Error())
	default:
		c.failErr(op, err)
	}
}

// HelperRecordings is a RecordingSource over a helper that lists
// recordings and hands one out as an open file (the recording helper's
// rec-list and rec-open on "web to record", each with the grant, each
// deciding by policy itself). Open's file is read to its end as it is
// now, at most MaxRecordingToPage; a recording still being written ends
// in a partial line, which the player leaves out.
type HelperRecordings struct {
	ListFunc func(ctx context.Context, g msg.Grant) ([]RecordingInfo, error)
	OpenFunc func(ctx context.Context, g msg.Grant, id string) (*os.File, error)
}

func (h *HelperRecordings) List(ctx context.Context, g msg.Grant) ([]RecordingInfo, error) {
	list, err := h.ListFunc(ctx, g)
	if len(list) > maxRecordings {
		list = list[:maxRecordings]
	}
	return list, err
}

func (h *HelperRecordings) Read(ctx context.Context, g msg.Grant, id string) ([]byte, error) {
	f, err := h.OpenFunc(ctx, g, id)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxRecordingToPage+1))
	if err != nil {
		return nil, fmt.Errorf("frontend: read recording %s: %w", id, err)
	}
	if len(b) > MaxRecordingToPage {
		return nil, errTooLarge
	}
	return b, nil
}

// Recordings is the page's RecordingSource over the recording helper:
// rec-list and rec-open on "web to record", each with the connection's
// grant, which the helper verifies and asks policy check-audit about.
// The frontend decides nothing here and never reads the recordings
// directory: it gets what the helper lists and read-only fds of what it
// opens.
func (h *Helpers) Recordings() *HelperRecordings {
	return &HelperRecordings{ListFunc: h.recList, OpenFunc: h.recOpen}
}

func (h *Helpers) recList(ctx context.Context, g msg.Grant) ([]RecordingInfo, error) {
	r, _, err := ask[msg.RecListReply](ctx, h.record, msg.OpRecList, msg.RecList{Grant: &g}, nil, 0)
	if err != nil {
		return nil, err
	}
	out := make([]RecordingInfo, 0, len(r.Recordings))
	for _, x := range r.Recordings {
		out = append(out, RecordingInfo{ID: x.ID, User: x.UnixUser, Machine: x.Machine, Width: int(x.Width), Height: int(x.Height),
			Started: x.Started, Size: x.Size, Requester: x.Requester, Live: x.Live})
	}
	return out, nil
}

func (h *Helpers) recOpen(ctx context.Context, g msg.Grant, id string) (*os.File, error) {
	_, f, err := askOne[msg.RecOpenReply](ctx, h.record, msg.OpRecOpen, msg.RecOpen{Grant: &g, ID: id})
	return f, err
}
