package hostile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/internal/ticket"
	"sluice/internal/ticket/tickettest"
	"sluice/msg"
)

// TestTicketRelabel is the security review's attack: a compromised
// frontend (the frontend's build-ID lines, which are public) is given a
// root shell for alice by policy and tries to put it in ptystore as
// "alice as alice", so that the recheck after the admin removes "allow
// alice as root" asks about the wrong target and the root shell lives
// on. Policy has put the session itself, under its own word, and the
// frontend may not put at all; the recheck must then end the session.
func TestTicketRelabel(t *testing.T) {
	s := helpers(t)
	run, err := os.MkdirTemp(s.dir, "ticket-")
	if err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(run, "policy")
	const allowRoot = "allow alice as root on .host command /bin/sleep 600\n"
	const rest = "on-revoke end\nallow alice as alice on .host\nallow alice as nobody on .host command /bin/sleep 600\n"
	if err := os.WriteFile(policyPath, []byte(rest+allowRoot), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := func(n string) string { return filepath.Join(run, n+".sock") }
	common := []string{"--timeout", helperTimeout.String()}
	s.startIn(t, run, "shell", sock("shell"), append(common, "--backend", "embedded")...)
	s.startIn(t, run, "policy", sock("policy"), append(common, "--policy", policyPath, "--grant-key", s.keyPath)...)
	s.startIn(t, run, "hangup", sock("hangup"), common...)
	s.startIn(t, run, "ptystore", sock("ptystore"), append(common, "--grant-key", s.keyPath, "--hangup-grace", "100ms",
		"--policy-file", policyPath, "--policy-poll", "20ms", "--recorders", "uid:4242")...)

	frontPolicy := s.hello(t, msg.Frontend, msg.ProtoWebToPolicy, "client")
	frontPty := s.hello(t, msg.Frontend, msg.ProtoWebToPtyStore, "client")
	alice := s.grantFor(t, "alice")

	create := func(user string) (msg.CreateShellSessionReply, *os.File) {
		t.Helper()
		a, err := Exchange(sock("policy"), Cat(frontPolicy.Lines(), Frame(request(msg.OpCreateShellSession,
			msg.CreateShellSession{Machine: msg.HostMachine, User: user, Args: []string{"/bin/sleep", "600"}, Grant: alice}))))
		if err != nil {
			t.Fatal(err)
		}
		r := a.Parse()
		var rep msg.CreateShellSessionReply
		if r.Kind != OK || len(a.FDs) != 1 || msgpack.Unmarshal(r.Payload, &rep) != nil {
			a.CloseFDs()
			t.Fatalf("create alice as %s: %v with %d fds\n%s", user, r, len(a.FDs), s.logOf(sock("policy")))
		}
		return rep, os.NewFile(uintptr(a.FDs[0]), "master")
	}
	root, rootMaster := create("root")
	defer rootMaster.Close()
	other, otherMaster := create("nobody")
	defer otherMaster.Close()
	if root.Session.UnixUser != "root" || root.Session.PID <= 0 {
		t.Fatalf("root session %+v", root.Session)
	}

	put := func(info msg.SessionInfo, tk msg.SessionTicket, master *os.File) Reply {
		t.Helper()
		c, err := Dial(sock("ptystore"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteFDs(Cat(frontPty.Lines(), Frame(request(msg.OpPtyPut, msg.PtyPut{Grant: alice, Session: info, Ticket: tk}))),
			[]int{int(master.Fd())}); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		a := c.ReadAll()
		a.CloseFDs()
		return a.Parse()
	}
	// Policy put both sessions into ptystore, under its own word, before
	// the frontend had either fd: there is nothing left for the frontend
	// to put, and a put from it is refused whatever it carries, even a
	// ticket that would verify (made here with the suite's key).
	id, err := ticket.Identify(rootMaster)
	if err != nil {
		t.Fatal(err)
	}
	asAlice := root.Session
	asAlice.UnixUser = "alice"
	asAlice.ID = "relabelled"
	good, err := ticket.Sign(s.key, asAlice, id, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for name, tk := range map[string]msg.SessionTicket{"a ticket that verifies": good, "no ticket": {}} {
		if r := put(asAlice, tk, rootMaster); r.Kind == OK {
			t.Fatalf("root shell put by the frontend as alice as alice with %s: %v", name, r)
		}
	}
	var list msg.PtyListReply
	a, err := Exchange(sock("ptystore"), Cat(frontPty.Lines(), Frame(request(msg.OpPtyList, msg.PtyList{Grant: alice}))))
	has := func(id, unixUser string) bool {
		return slices.ContainsFunc(list.Sessions, func(i msg.SessionInfo) bool { return i.ID == id && i.UnixUser == unixUser })
	}
	if r := a.Parse(); err != nil || r.Kind != OK || msgpack.Unmarshal(r.Payload, &list) != nil ||
		len(list.Sessions) != 2 || !has(root.Session.ID, "root") || !has(other.Session.ID, "nobody") {
		t.Fatalf("alice's sessions: %v %v %+v", err, r, list)
	}

	// The admin takes "alice as root" away: the recheck (on-revoke end)
	// must end the root shell, whatever the frontend would have said.
	if err := os.WriteFile(policyPath, []byte(rest), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second) // a guard, not a measurement
	for {
		err := unix.Kill(int(root.Session.PID), 0)
		if errors.Is(err, unix.ESRCH) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the root shell (pid %d) outlived its rule: %v\n%s", root.Session.PID, err, s.logOf(sock("ptystore")))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if log := s.logOf(sock("ptystore")); !strings.Contains(log, root.Session.ID) {
		t.Fatalf("ptystore's log does not name the ended session\n%s", log)
	}
}

// ticketFor is the ticket policy would have given with fd for info, for
// tests that put sessions they made themselves.
func (s *helperSuite) ticketFor(t *testing.T, info msg.SessionInfo, fd int) msg.SessionTicket {
	t.Helper()
	nfd, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(nfd), "session")
	defer f.Close()
	return tickettest.For(t, s.key, info, f)
}
