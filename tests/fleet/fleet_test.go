// Package fleet tests the fleet end to end (docs/fleet.md): a gateway and
// three hosts, each host a network namespace with a real sshd and its own
// sluice suite under sluice run, the gateway's ssh in a namespace of its
// own. A user signs in once at the gateway's auth; the test then speaks
// as the gateway's frontend would.
package fleet

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/helpers/fleet"
	"sluice/internal/hostgrant"
	"sluice/internal/pty"
	"sluice/internal/termsock"
	"sluice/msg"
	"sluice/rpc"
	"sluice/tests/fleet/fleetenv"
)

// typeAndSee types line into a stream and reads until want shows.
func typeAndSee(t *testing.T, f *os.File, line, want string) {
	t.Helper()
	if _, err := typeInto(f, line); err != nil {
		t.Fatalf("write: %v", err)
	}
	see(t, f, want)
}

// typeInto writes keys to a stream's fd as the frontend does: framed on
// the termsock socket the fleet helper hands out, raw on a pty master (an
// older build's, for A/B runs against it).
func typeInto(f *os.File, keys string) (int, error) {
	if termsock.Is(f) {
		return f.Write(termsock.AppendInput(nil, []byte(keys)))
	}
	return f.Write([]byte(keys))
}

// resize sets a stream's window size as the frontend does.
func resize(f *os.File, rows, cols uint16) error {
	if termsock.Is(f) {
		_, err := f.Write(termsock.AppendResize(nil, cols, rows))
		return err
	}
	return pty.SetSize(f, rows, cols)
}

func see(t *testing.T, f *os.File, want string) {
	t.Helper()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	f.SetReadDeadline(time.Now().Add(20 * time.Second))
	defer f.SetReadDeadline(time.Time{})
	for !strings.Contains(got.String(), want) {
		n, err := f.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("waiting for %q: %v; got %q", want, err, tail(got.String(), 400))
		}
	}
}

func code(err error) string { return rpc.CodeOf(err) }

func TestFleet(t *testing.T) {
	e := newEnv(t, map[string]string{
		"h1": "allow alice as root on .host\n",
		"h2": "allow alice as root on .host\n",
		"h3": "allow bob as root on .host\n", // alice: denied by h3's own policy
	})
	ctx := context.Background()
	g := e.SignIn(ctx, "alice") // the one sign-in

	// The fleet helper lists the hosts, and each relay names itself.
	var hs msg.FleetHostsReply
	if _, err := callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetHosts, msg.FleetHosts{}, &hs); err != nil || len(hs.Hosts) != 3 {
		t.Fatalf("fleet-hosts: %v %+v", err, hs)
	}
	for _, n := range []string{"h1", "h2", "h3"} {
		var c msg.FleetCheckReply
		if _, err := callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetCheck, msg.FleetCheck{Host: n}, &c); err != nil || c.RelayHost != n {
			t.Fatalf("fleet-check %s: %v %+v", n, err, c)
		}
		t.Logf("fleet-check %s: %d ms", n, c.ElapsedMs)
	}

	// Shells on two hosts, typed into.
	sessions := map[string]string{}
	ptys := map[string]*os.File{}
	for _, n := range []string{"h1", "h2"} {
		hg := e.HostGrant(ctx, g, n)
		var tg msg.AllowedTargetsReply
		if err := e.Call(ctx, n, hg, msg.Policy, msg.OpAllowedTargets, msg.AllowedTargets{}, &tg); err != nil || len(tg.Targets) != 1 {
			t.Fatalf("%s allowed-targets: %v %+v", n, err, tg)
		}
		rep, f, err := e.Open(ctx, n, hg, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
		if err != nil {
			t.Fatalf("%s: open: %v", n, err)
		}
		if rep.Host != n || rep.Session.Owner != "alice" || rep.Mode != msg.ModeOwner {
			t.Fatalf("%s: open reply %+v", n, rep)
		}
		typeAndSee(t, f, "echo fleet-$((6*7))-"+n+"\n", "fleet-42-"+n)
		sessions[n], ptys[n] = rep.Session.ID, f
	}
	// Each session is held by its own host's ptystore, and only there.
	for _, n := range []string{"h1", "h2"} {
		ss, err := e.Hosts[n].Suite.Sessions(ctx)
		if err != nil || len(ss) != 1 || ss[0].ID != sessions[n] || ss[0].Owner != "alice" {
			t.Fatalf("%s ptystore holds %+v (%v), want %s", n, ss, err, sessions[n])
		}
	}
	if ss, _ := e.GW.Sessions(ctx); len(ss) != 0 {
		t.Fatalf("the gateway's ptystore holds %+v", ss)
	}

	t.Run("denied by the host's own policy", func(t *testing.T) {
		hg := e.HostGrant(ctx, g, "h3")
		_, _, err := e.Open(ctx, "h3", hg, msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
		if code(err) != msg.CodeDenied || !strings.Contains(err.Error(), "h3") {
			t.Fatalf("h3: %v, want denied naming h3", err)
		}
	})

	t.Run("reattach after the connection drops", func(t *testing.T) {
		ptys["h1"].Close() // the gateway side goes away: ssh ends
		hg := e.HostGrant(ctx, g, "h1")
		var l msg.PtyListReply
		if err := e.Call(ctx, "h1", hg, msg.PtyStore, msg.OpPtyList, msg.PtyList{}, &l); err != nil || len(l.Sessions) != 1 {
			t.Fatalf("pty-list on h1: %v %+v", err, l)
		}
		rep, f, err := e.Open(ctx, "h1", hg, msg.OpPtyGet, msg.PtyGet{ID: sessions["h1"]})
		if err != nil {
			t.Fatalf("reattach: %v", err)
		}
		if rep.Session.ID != sessions["h1"] || rep.Mode != msg.ModeOwner {
			t.Fatalf("reattach reply %+v", rep)
		}
		typeAndSee(t, f, "echo again-$((7*7))\n", "again-49")
		ptys["h1"] = f
	})

	t.Run("ctrl-c under a flood reaches the prompt", func(t *testing.T) {
		f := ptys["h1"]
		if _, err := typeInto(f, "yes flood-flood-flood\n"); err != nil {
			t.Fatal(err)
		}
		see(t, f, "flood-flood-flood\r\nflood-flood-flood\r\n")
		// Read the flood for a while, as a browser keeping up would.
		drain := func(d time.Duration) int {
			buf := make([]byte, 64<<10)
			n := 0
			end := time.Now().Add(d)
			f.SetReadDeadline(end)
			for time.Now().Before(end) {
				k, err := f.Read(buf)
				n += k
				if err != nil {
					break
				}
			}
			f.SetReadDeadline(time.Time{})
			return n
		}
		flood := drain(300 * time.Millisecond)
		start := time.Now()
		typeInto(f, "\x03")
		typeInto(f, "echo after-$((5*5))\n")
		see(t, f, "after-25")
		t.Logf("flood read %d bytes in 300 ms; after Ctrl-C the prompt answered in %v", flood, time.Since(start))
	})

	t.Run("hostile: a grant for h1 presented to h2", func(t *testing.T) {
		hg := e.HostGrant(ctx, g, "h1")
		var l msg.PtyListReply
		err := e.Call(ctx, "h2", hg, msg.PtyStore, msg.OpPtyList, msg.PtyList{}, &l)
		if code(err) != msg.CodeBadGrant {
			t.Fatalf("h1's grant on h2: %v, want bad-grant", err)
		}
		_, _, err = e.Open(ctx, "h2", hg, msg.OpPtyGet, msg.PtyGet{ID: sessions["h2"]})
		if code(err) != msg.CodeBadGrant {
			t.Fatalf("h1's grant attaching on h2: %v, want bad-grant", err)
		}
	})

	t.Run("hostile: an expired host grant", func(t *testing.T) {
		old, err := hostgrant.Sign(e.HostKey, "alice", nil, "h2", time.Now().Add(-3*time.Minute), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = e.Open(ctx, "h2", old, msg.OpPtyGet, msg.PtyGet{ID: sessions["h2"]})
		if code(err) != msg.CodeBadGrant {
			t.Fatalf("expired: %v, want bad-grant", err)
		}
	})

	t.Run("hostile: a host grant signed by another key", func(t *testing.T) {
		// What a compromised host could make: it holds no gateway key.
		k, _ := hostgrant.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
		forged, _ := hostgrant.Sign(k, "alice", nil, "h2", time.Now(), time.Minute)
		_, _, err := e.Open(ctx, "h2", forged, msg.OpPtyGet, msg.PtyGet{ID: sessions["h2"]})
		if code(err) != msg.CodeBadGrant {
			t.Fatalf("forged: %v, want bad-grant", err)
		}
	})

	t.Run("hostile: an unpinned host key", func(t *testing.T) {
		kh := filepath.Join(e.FleetDir, fleet.KnownHostsFile)
		orig, _ := os.ReadFile(kh)
		defer os.WriteFile(kh, orig, 0o644)
		// h2's key pinned under h1's name: h1's real key is then unknown.
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(orig)), "\n") {
			if strings.HasPrefix(l, "h1 ") {
				f := strings.Fields(e.Hosts["h2"].HostPub)
				l = "h1 " + f[0] + " " + f[1]
			}
			lines = append(lines, l)
		}
		os.WriteFile(kh, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
		var c msg.FleetCheckReply
		_, err := callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetCheck, msg.FleetCheck{Host: "h1"}, &c)
		if code(err) != msg.CodeFailed || !strings.Contains(err.Error(), "host key") {
			t.Fatalf("h1 with a wrong pinned key: %v, want failed: host key", err)
		}
		_, _, err = e.Open(ctx, "h1", e.HostGrant(ctx, g, "h1"), msg.OpPtyGet, msg.PtyGet{ID: sessions["h1"]})
		if code(err) != msg.CodeFailed {
			t.Fatalf("open with a wrong pinned key: %v", err)
		}
		// No pin at all.
		os.WriteFile(kh, nil, 0o644)
		if _, err := callFleet(ctx, e, msg.ProtoAdminToFleet, msg.OpFleetCheck, msg.FleetCheck{Host: "h2"}, &c); code(err) != msg.CodeFailed {
			t.Fatalf("h2 unpinned: %v", err)
		}
	})

	t.Run("hostile: the relay account tries anything but its forced command", func(t *testing.T) {
		h := e.Hosts["h1"]
		base := []string{"netns", "exec", e.GWNS, "ssh", "-F", "/dev/null", "-i", filepath.Join(e.FleetDir, fleet.KeyFile),
			"-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + filepath.Join(e.FleetDir, fleet.KnownHostsFile),
			"-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=h1", "-o", "BatchMode=yes", "-l", fleetenv.RelayUser}
		for _, c := range []struct {
			name string
			args []string
		}{
			{"a command", []string{"-T", h.Addr, "id; touch /tmp/sluice-relay-escaped"}},
			{"a shell", []string{"-T", h.Addr}},
			{"sftp", []string{"-s", h.Addr, "sftp"}},
			{"a tcp forward", []string{"-W", "127.0.0.1:22", h.Addr}},
			// Streams need no pty on the host (sizes are frames): the
			// key line gives none (`restrict` without `pty`).
			{"a pty", []string{"-tt", h.Addr}},
		} {
			t.Run(c.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, "ip", append(base, c.args...)...)
				cmd.Stdin = strings.NewReader("id\n")
				out, _ := cmd.CombinedOutput()
				if bytes.Contains(out, []byte("uid=")) {
					t.Fatalf("ran a command: %q", out)
				}
				if _, err := os.Stat("/tmp/sluice-relay-escaped"); err == nil {
					os.Remove("/tmp/sluice-relay-escaped")
					t.Fatal("the forced command was escaped")
				}
				if c.name == "a tcp forward" {
					if bytes.Contains(out, []byte("SSH-2.0")) {
						t.Fatalf("forwarded: %q", out)
					}
					return
				}
				if c.name == "a pty" {
					if !bytes.Contains(out, []byte("PTY allocation request failed")) {
						t.Fatalf("sshd gave the relay account a pty: %q", out)
					}
					return
				}
				// Whatever was asked, sluice-relay ran, and refused the input.
				if !bytes.Contains(out, []byte(strings.TrimSpace(msg.RelayReady))) {
					t.Fatalf("not the relay: %q", out)
				}
			})
		}
	})

	t.Run("stopping a host leaves the others working", func(t *testing.T) {
		h2 := e.Hosts["h2"]
		e.StopSSHD(h2)
		h2.Suite.Stop()
		_, _, err := e.Open(ctx, "h2", e.HostGrant(ctx, g, "h2"), msg.OpPtyGet, msg.PtyGet{ID: sessions["h2"]})
		if code(err) != msg.CodeFailed {
			t.Fatalf("h2 stopped: %v, want failed", err)
		}
		typeAndSee(t, ptys["h1"], "echo still-$((8*8))\n", "still-64")
		_, f, err := e.Open(ctx, "h1", e.HostGrant(ctx, g, "h1"), msg.OpCreateShellSession, msg.CreateShellSession{Machine: msg.HostMachine, User: "root"})
		if err != nil {
			t.Fatalf("new session on h1 with h2 down: %v", err)
		}
		typeAndSee(t, f, "echo new-$((9*9))\n", "new-81")
		f.Close()
	})
}

func callFleet(ctx context.Context, e *env, proto, op string, args, reply any) ([]*os.File, error) {
	cl := e.FleetClient(proto)
	raw, err := msgpackMarshal(args)
	if err != nil {
		return nil, err
	}
	return cl.Call(ctx, msg.Request{Op: op, Args: raw}, nil, reply)
}
