package fleet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/helpers/record/recordtest"
	"sluice/msg"
	"sluice/tests/fleet/fleetenv"
)

// A host whose policy records a session records it at the host, whoever
// reaches it: typing through the gateway (fleet helper, ssh, the host's
// relay) into a recorded session works, the relay speaking the session
// socket's frames to the host's recorder, and the host's recording has
// the output, verifies intact and parses with asciinema.
func TestFleetRecordedSession(t *testing.T) {
	e := fleetenv.New(t, fleetenv.Options{Policies: map[string]string{
		"h1": "allow alice as root on .host record\n",
		"h2": "allow alice as root on .host\n",
	}})
	defer func() {
		if t.Failed() {
			t.Log(e.Logs())
		}
	}()
	ctx := context.Background()
	g := e.SignIn(ctx, "alice")
	rep, f, err := e.Open(ctx, "h1", e.HostGrant(ctx, g, "h1"), msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
	if err != nil {
		t.Fatalf("h1: open: %v", err)
	}
	defer f.Close()
	id := rep.Session.ID
	h := e.Hosts["h1"]
	// Typed through the gateway: the shell computes it, so the output
	// proves the input reached the shell, framed, through the recorder.
	typeAndSee(t, f, "echo fleet-$((6*7))\n", "fleet-42")
	if st := hostVerify(t, h, id); st.State != msg.RecLive {
		t.Fatalf("h1's recording of %s while it runs: %+v", id, st)
	}
	typeAndSee(t, f, "exit\n", "exit")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := hostVerify(t, h, id)
		if st.State == msg.RecIntact {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h1's recording of %s after exit: %+v", id, st)
		}
	}
	path := filepath.Join(t.TempDir(), id+".cast")
	if out, err := hostSluicectl(h, "recordings", "export", id, "-o", path); err != nil {
		t.Fatalf("recordings export on h1: %v\n%s", err, out)
	}
	o := castOutput(t, path)
	if !strings.Contains(o, "fleet-42") {
		t.Fatalf("h1's recording lacks the output typed for through the gateway: %q", tail(o, 400))
	}
	if cat := recordtest.Cat(t, path); string(cat) != o {
		t.Fatalf("asciinema cat printed %d bytes, the o events hold %d", len(cat), len(o))
	}
	// h2 records nothing: its rule has no record.
	rep2, f2, err := e.Open(ctx, "h2", e.HostGrant(ctx, g, "h2"), msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
	if err != nil {
		t.Fatalf("h2: open: %v", err)
	}
	defer f2.Close()
	typeAndSee(t, f2, "echo plain-$((1+1))\n", "plain-2")
	if _, err := os.Stat(filepath.Join(h.Suite.StateDir, "record", "recordings", rep2.Session.ID+".cast")); err == nil {
		t.Fatal("h2's unrecorded session has a recording on h1")
	}
	if out, err := hostSluicectl(e.Hosts["h2"], "recordings", "list", "--json"); err != nil || strings.Contains(out, rep2.Session.ID) {
		t.Fatalf("h2 recordings list: %v %s", err, out)
	}
}

// hostSluicectl runs sluicectl as root on host h's own suite.
func hostSluicectl(h *fleetenv.Host, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(h.Suite.Bin, "sluicectl"), args...)
	cmd.Env = []string{"SLUICE_RUNTIME_DIR=" + h.Suite.RunDir, "SLUICE_MANIFEST=" + filepath.Join(h.Suite.RunDir, "build-ids.json"),
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func hostVerify(t *testing.T, h *fleetenv.Host, id string) msg.RecVerifyReply {
	t.Helper()
	out, err := hostSluicectl(h, "recordings", "verify", "--json", id)
	var v msg.RecVerifyReply
	if jerr := json.Unmarshal([]byte(out), &v); jerr != nil {
		t.Fatalf("recordings verify on %s: %v: %q", h.Name, err, out)
	}
	return v
}

// castOutput is a recording's o events, concatenated.
func castOutput(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var o strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 0; sc.Scan(); n++ {
		if n == 0 {
			continue
		}
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("%s line %d %q: %v", path, n+1, sc.Text(), err)
		}
		if s, _ := ev[2].(string); ev[1] == "o" {
			o.WriteString(s)
		}
	}
	return o.String()
}
