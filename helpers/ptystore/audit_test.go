package ptystore

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/internal/grant"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
)

const auditTestPolicy = bothAllowed + `audit carol
audit dave on web1
`

// auditorFor serves "ptystore to policy" with the real policy handler,
// reading pf at each call, and checking revocations in revDir; it returns
// the AuditChecker ptystore's main makes, over that socket.
func (pf *policyFile) auditor(key grant.Key, revDir string) AuditChecker {
	t := pf.t
	p, _ := msg.Lookup(msg.ProtoPtyStoreToPolicy)
	client := rpc.Hello{Intent: msg.Intent(p, "client"), BuildID: strings.Repeat("e7", 32)}
	server := rpc.Hello{Intent: msg.Intent(p, "server"), BuildID: strings.Repeat("f8", 32)}
	path := filepath.Join(t.TempDir(), "policy.sock")
	pf.serve(path, 0o600, key, revDir, client, server, rpc.Allow{UIDs: []uint32{uint32(os.Getuid())}})
	cl := &rpc.Client{Path: path, Hello: client, Expect: server}
	return func(ctx context.Context, a msg.AuditScope) (msg.AuditScopeReply, error) {
		var rep msg.AuditScopeReply
		raw, err := msgpack.Marshal(a)
		if err != nil {
			return rep, err
		}
		_, err = cl.Call(ctx, msg.Request{Op: msg.OpAuditScope, Args: raw}, nil, &rep)
		return rep, err
	}
}

func (h *harness) putOn(sh *shell, id, owner, machine string) {
	h.t.Helper()
	info := sessionInfo(id, owner)
	info.Machine = machine
	if _, code := call(h.t, h.pol, msg.OpPtyPut, msg.PtyPut{Grant: h.grant(owner), Session: info, Ticket: tk(h.t, h.key, info, sh.master)}, []*os.File{sh.master}, nil); code != "" {
		h.t.Fatalf("put %s: %s", id, code)
	}
	sh.master.Close()
	h.fds.waitMsg(h.t, "FDSTORE=1")
}

func (h *harness) auditList(g msg.Grant) ([]string, string) {
	h.t.Helper()
	var rep msg.PtyListReply
	if _, code := call(h.t, h.web, msg.OpPtyAuditList, msg.PtyAuditList{Grant: g}, nil, &rep); code != "" {
		return nil, code
	}
	return ids(rep.Sessions), ""
}

func (h *harness) auditGet(id string, g msg.Grant) (*os.File, msg.PtyGetReply, string) {
	h.t.Helper()
	var rep msg.PtyGetReply
	fds, code := call(h.t, h.web, msg.OpPtyAuditGet, msg.PtyAuditGet{Grant: g, ID: id}, nil, &rep)
	for _, f := range fds {
		h.t.Cleanup(func() { f.Close() })
	}
	if code == "" && len(fds) != 1 {
		h.t.Fatalf("audit get %s: %d fds", id, len(fds))
	}
	if code != "" {
		return nil, rep, code
	}
	return fds[0], rep, ""
}

// TestAudit: an auditor lists and watches the sessions on the machines
// the policy names for them, whoever owns them; anyone else, and any grant
// policy does not vouch for, gets nothing.
func TestAudit(t *testing.T) {
	pf := newPolicyFile(t, auditTestPolicy)
	revDir := t.TempDir()
	if err := revoke.Write(revDir, revoke.List{}); err != nil {
		t.Fatal(err)
	}
	h := newHarnessPolicy(t, Config{}, pf.checker)
	h.hd.Audit = pf.auditor(h.key, revDir)
	h.put(startShell(t), "a", "alice")
	h.putOn(startShell(t), "w", "bob", "web1")

	carol, dave, alice := h.grant("carol"), h.grant("dave"), h.grant("alice")
	if got, code := h.auditList(carol); code != "" || !slices.Equal(got, []string{"a", "w"}) {
		t.Errorf("carol (audit on any machine) lists %v %q, want [a w]", got, code)
	}
	if got, code := h.auditList(dave); code != "" || !slices.Equal(got, []string{"w"}) {
		t.Errorf("dave (audit on web1) lists %v %q, want [w]", got, code)
	}
	f, rep, code := h.auditGet("a", carol)
	if code != "" || rep.Mode != msg.ModeAudit || rep.Session.Owner != "alice" {
		t.Fatalf("carol watches alice's session: %q %+v", code, rep)
	}
	converse(t, f) // the same live pty
	// Outside the scope reads as no session at all.
	if _, _, code := h.auditGet("a", dave); code != msg.CodeNotFound {
		t.Errorf("dave watches a .host session: %q, want %s", code, msg.CodeNotFound)
	}
	if _, _, code := h.auditGet("nope", carol); code != msg.CodeNotFound {
		t.Errorf("no such session: %q", code)
	}

	// No audit rule: denied, even for the owner of sessions.
	if _, code := h.auditList(alice); code != msg.CodeDenied {
		t.Errorf("alice (no audit rule) lists: %q, want %s", code, msg.CodeDenied)
	}
	if _, _, code := h.auditGet("w", alice); code != msg.CodeDenied {
		t.Errorf("alice (no audit rule) watches bob's: %q, want %s", code, msg.CodeDenied)
	}

	// Grants: forged, expired and tampered ones are refused by ptystore,
	// a revoked one by policy too.
	forged, _ := grant.Sign(grant.NewKey(), "carol", time.Now(), time.Hour)
	expired, _ := grant.Sign(h.key, "carol", time.Now().Add(-2*time.Hour), time.Hour)
	tampered := h.grant("alice")
	tampered.User = "carol"
	for name, g := range map[string]msg.Grant{"forged": forged, "expired": expired, "tampered": tampered} {
		if _, code := h.auditList(g); code != msg.CodeBadGrant {
			t.Errorf("%s grant lists: %q", name, code)
		}
		if _, _, code := h.auditGet("a", g); code != msg.CodeBadGrant {
			t.Errorf("%s grant watches: %q", name, code)
		}
	}
	if err := revoke.Write(revDir, revoke.List{Users: map[string]revoke.User{"carol": {Disabled: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, code := h.auditGet("a", carol); code != msg.CodeBadGrant {
		t.Errorf("disabled auditor watches: %q, want %s", code, msg.CodeBadGrant)
	}

	// The file is read at each call: the audit line gone, dave is refused.
	pf.write(bothAllowed)
	if _, _, code := h.auditGet("w", dave); code != msg.CodeDenied {
		t.Errorf("dave after his audit line went: %q", code)
	}

	// Admins have their own list; the audit ops are the web's.
	if _, code := call(t, h.admin, msg.OpPtyAuditList, msg.PtyAuditList{Grant: carol}, nil, nil); code != rpc.CodeForbidden {
		t.Errorf("audit list over admin to ptystore: %q", code)
	}
}

// TestAuditNoPolicy: without a policy helper to ask, nobody audits.
func TestAuditNoPolicy(t *testing.T) {
	h := newHarness(t, Config{})
	h.put(startShell(t), "a", "alice")
	if _, code := h.auditList(h.grant("carol")); code != msg.CodeFailed {
		t.Errorf("audit list without policy: %q", code)
	}
	if _, _, code := h.auditGet("a", h.grant("carol")); code != msg.CodeFailed {
		t.Errorf("audit get without policy: %q", code)
	}
}
