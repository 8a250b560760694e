package record

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
)

func call(t *testing.T, op string, args any) *rpc.Call {
	t.Helper()
	a, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	b, err := msgpack.Marshal(msg.Request{Op: op, Args: a})
	if err != nil {
		t.Fatal(err)
	}
	return &rpc.Call{Body: b}
}

// "web to record" serves an auditor only: a grant that holds, and policy
// saying yes to check-audit; never rec-verify. "admin to record" asks for
// neither.
func TestWebRoute(t *testing.T) {
	key := grant.NewKey()
	dir := t.TempDir()
	st := &Store{Dir: dir}
	f, err := st.Create("0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(f, testKey, Header{Version: 2, Width: 80, Height: 24, Sluice: Meta{Requester: "alice", Machine: ".host"}}, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	web1 := "1123456789abcdef0123456789abcdef"
	if f, err = st.Create(web1); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(f, testKey, Header{Version: 2, Width: 80, Height: 24, Sluice: Meta{Requester: "alice", Machine: "web1"}}, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	good, _ := grant.Sign(key, "carol", time.Now(), time.Hour)
	other, _ := grant.Sign(grant.NewKey(), "carol", time.Now(), time.Hour)
	erin, _ := grant.Sign(key, "erin", time.Now(), time.Hour)
	audit := map[string]msg.CheckAuditReply{
		"carol": {Allow: true, Machines: []string{"*"}},
		"erin":  {Allow: true, Machines: []string{"web1"}},
		// A reply that says allow with an empty scope grants nothing.
		"frank": {Allow: true},
		// Policy would allow it; the grant check refuses the name first.
		"Carol": {Allow: true, Machines: []string{"*"}},
	}
	h := &Handler{Store: st, Key: testKey, GrantKey: key, Audit: func(ctx context.Context, g msg.Grant) (msg.CheckAuditReply, error) {
		if g.User == "policy-down" {
			return msg.CheckAuditReply{}, errors.New("connection refused")
		}
		return audit[g.User], nil
	}}
	down, _ := grant.Sign(key, "policy-down", time.Now(), time.Hour)
	dave, _ := grant.Sign(key, "dave", time.Now(), time.Hour)
	frank, _ := grant.Sign(key, "frank", time.Now(), time.Hour)
	badName, _ := grant.Sign(key, "Carol", time.Now(), time.Hour)
	id := "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name string
		web  bool
		op   string
		args any
		code string
		nfd  int
	}{
		{"no grant", true, msg.OpRecList, msg.RecList{}, msg.CodeBadGrant, 0},
		{"forged grant", true, msg.OpRecOpen, msg.RecOpen{Grant: &other, ID: id}, msg.CodeBadGrant, 0},
		{"grant for an invalid user name", true, msg.OpRecList, msg.RecList{Grant: &badName}, msg.CodeBadGrant, 0},
		{"not an auditor", true, msg.OpRecOpen, msg.RecOpen{Grant: &dave, ID: id}, msg.CodeDenied, 0},
		{"policy unreachable", true, msg.OpRecList, msg.RecList{Grant: &down}, msg.CodeDenied, 0},
		{"auditor lists", true, msg.OpRecList, msg.RecList{Grant: &good}, "", 0},
		{"auditor opens", true, msg.OpRecOpen, msg.RecOpen{Grant: &good, ID: id}, "", 1},
		{"scoped auditor opens in scope", true, msg.OpRecOpen, msg.RecOpen{Grant: &erin, ID: web1}, "", 1},
		{"scoped auditor out of scope", true, msg.OpRecOpen, msg.RecOpen{Grant: &erin, ID: id}, msg.CodeNotFound, 0},
		{"empty scope", true, msg.OpRecList, msg.RecList{Grant: &frank}, msg.CodeDenied, 0},
		{"auditor may not verify", true, msg.OpRecVerify, msg.RecVerify{ID: id}, rpc.CodeBadRequest, 0},
		{"unknown id", true, msg.OpRecOpen, msg.RecOpen{Grant: &good, ID: "ffffffffffffffffffffffffffffffff"}, msg.CodeNotFound, 0},
		{"path in id", false, msg.OpRecOpen, msg.RecOpen{ID: "../../etc/shadow"}, msg.CodeNotFound, 0},
		{"admin verifies", false, msg.OpRecVerify, msg.RecVerify{ID: id}, "", 0},
		{"admin opens", false, msg.OpRecOpen, msg.RecOpen{ID: id}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serve := optable.HandlerOf(h.Tables(), msg.ProtoAdminToRecord)
			if tc.web {
				serve = optable.HandlerOf(h.Tables(), msg.ProtoWebToRecord)
			}
			rep, err := serve(context.Background(), call(t, tc.op, tc.args))
			for _, f := range rep.FDs {
				defer f.Close()
			}
			if got := rpc.CodeOf(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if len(rep.FDs) != tc.nfd {
				t.Fatalf("%d fds, want %d", len(rep.FDs), tc.nfd)
			}
			if tc.nfd == 1 {
				// Read-only: an auditor's fd cannot change the recording.
				if _, err := rep.FDs[0].Write([]byte("x")); err == nil {
					t.Fatal("the opened recording is writable")
				}
			}
		})
	}

	// An auditor lists only the recordings of the machines in scope.
	for user, want := range map[*msg.Grant][]string{&good: {id, web1}, &erin: {web1}} {
		rep, err := optable.HandlerOf(h.Tables(), msg.ProtoWebToRecord)(context.Background(), call(t, msg.OpRecList, msg.RecList{Grant: user}))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rep.Body.(msg.RecListReply).Recordings {
			got = append(got, r.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %v, want %v", user.User, got, want)
		}
	}
}

// A recorder started without a grant key file (sluice-record tolerates a
// missing one) refuses every grant on the web route; it used to check
// MACs with the all-zero key, which a compromised frontend can compute.
func TestWebRouteWithoutGrantKey(t *testing.T) {
	h := &Handler{Store: &Store{Dir: t.TempDir()}, Key: testKey, Audit: func(context.Context, msg.Grant) (msg.CheckAuditReply, error) {
		return msg.CheckAuditReply{Allow: true, Machines: []string{"*"}}, nil
	}}
	forged, err := grant.Sign(grant.Key{}, "alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = optable.HandlerOf(h.Tables(), msg.ProtoWebToRecord)(context.Background(), call(t, msg.OpRecList, msg.RecList{Grant: &forged}))
	if got := rpc.CodeOf(err); got != msg.CodeDenied {
		t.Fatalf("list with a zero-key grant: code %q (%v), want %q", got, err, msg.CodeDenied)
	}
}

// Retention: ended recordings past the age go, then the oldest until the
// rest fit; a live one (locked by its recorder) stays whatever its age.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	st := &Store{Dir: dir}
	now := time.Now()
	ids := []string{"a0000000000000000000000000000000", "b0000000000000000000000000000000", "c0000000000000000000000000000000", "d0000000000000000000000000000000"}
	var live *os.File
	for i, id := range ids {
		f, err := st.Create(id)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(f, testKey, Header{Version: 2, Width: 80, Height: 24, Sluice: Meta{Started: now.Add(time.Duration(i-10) * time.Hour).UnixMilli()}}, now, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.Event(now, 'o', make([]byte, 1000))
		if i == 0 {
			live = f // the oldest is still being written
			continue
		}
		w.End(now)
		f.Close()
	}
	defer live.Close()
	// Ages by last write: b 10 days, c 2 days, d now; a is live and old.
	for id, age := range map[string]time.Duration{ids[0]: 30 * 24 * time.Hour, ids[1]: 10 * 24 * time.Hour, ids[2]: 48 * time.Hour} {
		old := now.Add(-age)
		os.Chtimes(st.path(id), old, old)
	}
	size := func(id string) int64 { fi, _ := os.Stat(st.path(id)); return fi.Size() }
	st.MaxAge = 7 * 24 * time.Hour
	st.MaxTotal = size(ids[0]) + size(ids[3]) + 10 // room for a and d only
	if err := st.Prune(now); err != nil {
		t.Fatal(err)
	}
	for id, kept := range map[string]bool{ids[0]: true, ids[1]: false, ids[2]: false, ids[3]: true} {
		if _, err := os.Stat(st.path(id)); (err == nil) != kept {
			t.Errorf("%s kept=%v, want %v", id[:1], err == nil, kept)
		}
	}
}
