package systemd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/helpers/record/recordtest"
	"sluice/internal/grant"
	"sluice/internal/termsock"
	"sluice/msg"
	"sluice/rpc"
	"sluice/rpc/buildid"
)

// Recording under real systemd (issue 14): the policy boot() installs
// records erin's shells and makes carol an auditor of .host. A recorded
// session goes shell -> sluice-record@ (its own DynamicUser, state
// directory and record.key credential) -> ptystore's side; the test
// ends it, `sluicectl recordings verify` must say intact, the exported
// cast must parse with asciinema (the host's, on a copy: `asciinema cat`
// wants a terminal), and the auditor's rec-list and rec-open on "web to
// record" go through the recorder's check-audit to policy, which only
// sluice-audit-checkers may ask.

const recordClientEnv = "SLUICE_NSPAWN_RECORD_CLIENT"

// nspawnPolicy is the policy file boot() installs.
const nspawnPolicy = `allow alice as root on .host
allow erin as root on .host record
audit carol on .host
`

// recordUnderSystemd is TestNspawn's recording step.
func recordUnderSystemd(t *testing.T, c *container) {
	t.Helper()
	c.must("systemctl", "start", "sluice-record.socket")
	if st := c.must("stat", "-c", "%a %U:%G", "/run/sluice/record.sock"); strings.TrimSpace(st) != "660 root:sluice-record-callers" {
		t.Errorf("record.sock: %s", st)
	}
	client := func(args ...string) (string, error) {
		return c.run(append([]string{"env", recordClientEnv + "=1", "setpriv", "--groups=sluice-web,sluice-ptystore-callers", testDir + "/" + filepath.Base(os.Args[0])}, args...)...)
	}
	out, err := client("record")
	id, ok := strings.CutPrefix(strings.TrimSpace(lastLine(out)), "RECORDED ")
	if err != nil || !ok {
		journal, _ := c.run("journalctl", "--no-pager", "-n", "80")
		t.Fatalf("recorded session: %v\n%s\njournal:\n%s", err, out, journal)
	}

	// The recorder writes the end seal once both sides hung up.
	var v msg.RecVerifyReply
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		out := c.must(prefix+"/bin/sluicectl", "recordings", "verify", "--json", id)
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("recordings verify: %q: %v", out, err)
		}
		if v.State != msg.RecLive || time.Now().After(deadline) {
			break
		}
	}
	if v.State != msg.RecIntact {
		t.Fatalf("recording %s: %s (%s), want intact", id, v.State, v.Detail)
	}
	cast := c.must(prefix+"/bin/sluicectl", "recordings", "export", id)
	if int64(len(cast)) != v.Size {
		t.Errorf("export: %d bytes, verify says %d", len(cast), v.Size)
	}
	path := filepath.Join(t.TempDir(), id+".cast")
	if err := os.WriteFile(path, []byte(cast), 0o600); err != nil {
		t.Fatal(err)
	}
	if played := recordtest.Cat(t, path); !strings.Contains(string(played), "42-recorded") {
		t.Errorf("asciinema cat of the recording lacks the shell's answer:\n%q", played)
	}
	var hdr struct {
		Title  string `json:"title"`
		Sluice struct {
			Requester string `json:"requester"`
		} `json:"sluice"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(cast, "\n", 2)[0]), &hdr); err != nil || hdr.Title != "root@.host" || hdr.Sluice.Requester != "erin" {
		t.Errorf("header: %+v %v", hdr, err)
	}
	// Only the recording helper's user may read the directory: a
	// DynamicUser uid, whose name is gone once no instance runs.
	st := strings.Fields(c.must("stat", "-c", "%a %u", "/var/lib/private/sluice-record/recordings", "/var/lib/private/sluice-record/recordings/"+id+".cast"))
	if len(st) != 4 || st[0] != "700" || st[2] != "600" || st[1] != st[3] || atoi(st[1]) < 61184 || atoi(st[1]) > 65519 {
		t.Errorf("recordings' modes and owner: %v, want 700 and 600, one DynamicUser uid", st)
	}

	// The auditor through the recorder (check-audit to policy); alice,
	// no auditor, is refused.
	if out, err := client("audit", "carol", id); err != nil || !strings.Contains(out, fmt.Sprintf("OPENED %d", v.Size)) {
		journal, _ := c.run("journalctl", "--no-pager", "-o", "cat", "-u", "sluice-record@*", "-u", "sluice-policy@*", "-n", "40")
		t.Errorf("auditor: %v\n%s\njournal:\n%s", err, out, journal)
	}
	if out, err := client("audit", "alice", id); err == nil || !strings.Contains(out, "denied") {
		t.Errorf("alice, no auditor: %v\n%s", err, out)
	}
	journal := c.must("journalctl", "--no-pager", "-o", "cat", "-u", "sluice-record@*", "-u", "sluice-policy@*")
	for _, want := range []string{"record: recording", "record: ended", "call=check-audit", "record: opened for an auditor"} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal lacks %q", want)
		}
	}
}

// --- inside the container -------------------------------------------------

func init() {
	if os.Getenv(recordClientEnv) == "" {
		return
	}
	var args []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.") {
			args = append(args, a)
		}
	}
	if err := recordClientRole(args); err != nil {
		fmt.Println("client:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// recordClientRole speaks as the frontend: "record" opens erin's recorded
// session, has the shell answer and exits it, and says "RECORDED ID";
// "audit USER ID" lists and opens recording ID with USER's grant on "web
// to record" and says "OPENED SIZE".
func recordClientRole(args []string) error {
	man, err := buildid.Load(prefix + "/libexec/sluice/build-ids.json")
	if err != nil {
		return err
	}
	key, err := grant.LoadKey("/etc/sluice/grant.key")
	if err != nil {
		return err
	}
	callFDs := func(proto, op string, a any, send []*os.File, reply any) ([]*os.File, error) {
		p, _ := msg.Lookup(proto)
		mine, peer := rpc.Hello{Intent: msg.Intent(p, "client")}, rpc.Hello{Intent: msg.Intent(p, "server")}
		e, err := man.Lookup(p.Client, mine.Intent)
		if err != nil {
			return nil, err
		}
		mine.BuildID = e.BuildID
		if e, err = man.Lookup(p.Server, peer.Intent); err != nil {
			return nil, err
		}
		peer.BuildID = e.BuildID
		cl := &rpc.Client{Path: "/run/sluice/" + p.Server + ".sock", Hello: mine, Expect: peer, Timeout: 30 * time.Second}
		raw, err := msgpack.Marshal(a)
		if err != nil {
			return nil, err
		}
		return cl.Call(context.Background(), msg.Request{Op: op, Args: raw}, send, reply)
	}
	call := func(proto, op string, a any, reply any) ([]*os.File, error) {
		return callFDs(proto, op, a, nil, reply)
	}
	switch {
	case len(args) == 1 && args[0] == "record":
		g, err := grant.Sign(key, "erin", time.Now(), time.Hour)
		if err != nil {
			return err
		}
		var rep msg.CreateShellSessionReply
		fds, err := call(msg.ProtoWebToPolicy, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root", Grant: g}, &rep)
		if err != nil {
			return fmt.Errorf("create-shell-session: %w", err)
		}
		if len(fds) != 1 {
			return fmt.Errorf("%d fds from policy", len(fds))
		}
		master := fds[0]
		defer master.Close()
		// A recorded session's fd is the recorder's socket, which takes
		// typed bytes as frames, as the frontend's hub writes them.
		if !termsock.Is(master) {
			return errors.New("a recorded session's fd is not the recorder's socket")
		}
		// ptystore took it from policy already (made by a recorder:
		// SO_PEERGROUPS has sluice-recorders, ptystore's --recorders).
		typeIn := func(s string) error {
			_, err := master.Write(termsock.AppendInput(nil, []byte(s)))
			return err
		}
		if err := typeIn("echo $((6*7))-recorded\n"); err != nil {
			return err
		}
		r := bufio.NewReader(master)
		for answered := false; ; {
			line, err := r.ReadString('\n')
			if !answered && strings.Contains(line, "42-recorded") {
				answered = true
				if err := typeIn("exit\n"); err != nil {
					return err
				}
			}
			if err != nil {
				if !answered {
					return fmt.Errorf("reading the shell: %w", err)
				}
				// EOF: the shell exited and the recorder closed its end.
				fmt.Printf("RECORDED %s\n", rep.Session.ID)
				return nil
			}
		}
	case len(args) == 3 && args[0] == "audit":
		g, err := grant.Sign(key, args[1], time.Now(), time.Hour)
		if err != nil {
			return err
		}
		var list msg.RecListReply
		if _, err := call(msg.ProtoWebToRecord, msg.OpRecList, msg.RecList{Grant: &g}, &list); err != nil {
			return fmt.Errorf("rec-list: %w", err)
		}
		found := false
		for _, r := range list.Recordings {
			found = found || r.ID == args[2] && r.Requester == "erin" && r.Machine == msg.HostMachine
		}
		if !found {
			return fmt.Errorf("rec-list lacks %s: %+v", args[2], list.Recordings)
		}
		var open msg.RecOpenReply
		fds, err := call(msg.ProtoWebToRecord, msg.OpRecOpen, msg.RecOpen{Grant: &g, ID: args[2]}, &open)
		if err != nil {
			return fmt.Errorf("rec-open: %w", err)
		}
		if len(fds) != 1 {
			return fmt.Errorf("rec-open: %d fds", len(fds))
		}
		defer fds[0].Close()
		if _, err := fds[0].Write([]byte("x")); err == nil {
			return errors.New("rec-open's fd is writable")
		}
		n, err := io.Copy(io.Discard, fds[0])
		if err != nil {
			return err
		}
		fmt.Printf("OPENED %d\n", n)
		return nil
	}
	return errors.New("want: record | audit USER ID")
}
