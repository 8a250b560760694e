package ptystore

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/msg"
	"sluice/sdnotify"
)

func TestFDName(t *testing.T) {
	typical := msg.SessionInfo{ID: strings.Repeat("0f", 16), Owner: "alice@example.org", UnixUser: "alice",
		Machine: msg.HostMachine, Created: 1795000000000, Sharing: msg.ShareReadWrite, PID: 123456}
	longest := typical
	longest.Owner, longest.UnixUser, longest.Machine = strings.Repeat("o", 32), strings.Repeat("u", 32), strings.Repeat("m", 40)
	cases := []struct {
		name  string
		info  msg.SessionInfo
		epoch uint32
		fits  bool
	}{
		{"typical", typical, 7, true},
		{"private, epoch 0", sessionInfo("x", "y"), 0, true},
		{"32-hex id with 32-byte names and a 40-byte machine", longest, 1 << 31, true},
		{"three 64-byte fields", msg.SessionInfo{ID: strings.Repeat("i", 64), Owner: strings.Repeat("o", 64),
			UnixUser: strings.Repeat("u", 64), Machine: "m", Sharing: msg.SharePrivate}, 0, false},
	}
	for _, tc := range cases {
		if tc.info.Sharing == "" {
			tc.info.Sharing = msg.SharePrivate
		}
		name, err := fdName(tc.info, tc.epoch)
		if !tc.fits {
			if err == nil {
				t.Errorf("%s: %d-byte name accepted", tc.name, len(name))
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		// The runner's and systemd's rules for a name.
		if err := sdnotify.ValidName(name); err != nil || len(name) > MaxFDName {
			t.Errorf("%s: name %q (%d bytes) invalid: %v", tc.name, name, len(name), err)
		}
		info, epoch, err := parseFDName(name)
		if err != nil || info != tc.info || epoch != tc.epoch {
			t.Errorf("%s: round trip gave %+v %d %v", tc.name, info, epoch, err)
		}
	}

	priv := sessionInfo("x", "y")
	priv.Sharing = msg.SharePrivate
	good, err := fdName(priv, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{
		"sluice-ptystore.socket",
		"pty.",
		"pty.!!!",
		"pty." + strings.Repeat("A", 40),
		good[:len(good)-3],
	}
	for _, name := range bad {
		if _, _, err := parseFDName(name); err == nil {
			t.Errorf("parseFDName(%q) accepted", name)
		}
	}

	// A name whose msgpack claims a 1.3 GB string (found by FuzzFDName)
	// is refused without allocating for the claim.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = parseFDName("pty.mcx02000000")
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Error("length-claim name accepted")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("a 15-byte name allocated %d bytes", grew)
	}
}

func named(t *testing.T, f *os.File, name string) *os.File {
	t.Helper()
	nfd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(nfd), name)
}

func TestAdopt(t *testing.T) {
	h := newHarness(t, Config{})
	live, liveSlave := openPTY(t)
	defer live.Close()
	defer liveSlave.Close()
	dead, deadSlave := openPTY(t)
	defer dead.Close()
	deadSlave.Close()
	r, w, _ := os.Pipe()
	defer r.Close()

	s1 := sessionInfo("s1", "alice")
	s1.Sharing = msg.SharePrivate
	old, _ := fdName(s1, 0)
	s1.Sharing = msg.ShareReadOnly
	newer, _ := fdName(s1, 3)
	s2 := sessionInfo("s2", "bob")
	s2.Sharing = msg.SharePrivate
	deadName, _ := fdName(s2, 0)
	pipeName, _ := fdName(sessionInfo("s3", "carol"), 0)

	// As a crash in the middle of a share change could leave it: s1 under
	// two names, the newer with the later epoch.
	h.store.Adopt([]*os.File{
		named(t, live, old),
		named(t, live, newer),
		named(t, dead, deadName),
		named(t, w, pipeName),
		named(t, w, "pty.garbage"),
	})
	w.Close()
	for _, name := range []string{old, pipeName, "pty.garbage", deadName} {
		h.fds.waitMsg(t, "FDSTOREREMOVE=1\nFDNAME="+name)
	}
	h.waitDrop("s2 shell exited")
	if !isClosedPipe(t, r) {
		t.Fatal("a stored pipe was kept")
	}
	got := h.store.List(nil)
	if len(got) != 1 || got[0] != s1 {
		t.Fatalf("adopted %+v, want only %+v", got, s1)
	}
	// The survivor keeps its epoch: a token of epoch 3 works.
	tok, _ := makeToken(&NewHandler(h.store, h.key).tokenKey, s1, 3)
	f, rep, code := h.get("s1", h.grant("bob"), tok)
	if code != "" || rep.Mode != msg.ShareReadOnly {
		t.Fatalf("get with the adopted epoch's token: %q %+v", code, rep)
	}
	f.Close()
}
