package runner

import (
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func acl(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

func TestMay(t *testing.T) {
	unit := identity{uid: 61000, gid: 61000, groups: []uint32{50}}
	st := func(mode, uid, gid uint32) *unix.Stat_t {
		return &unix.Stat_t{Mode: unix.S_IFDIR | mode, Uid: uid, Gid: gid}
	}
	const userObj, user, groupObj, group, mask, other = 1, 2, 4, 8, 0x10, 0x20
	for _, tc := range []struct {
		name string
		st   *unix.Stat_t
		acl  []byte
		want bool
	}{
		{"root's 0700", st(0o700, 0, 0), nil, false},
		{"root's 0755", st(0o755, 0, 0), nil, true},
		{"root's 0711", st(0o711, 0, 0), nil, true},
		{"owner 0700", st(0o700, 61000, 0), nil, true},
		{"owner 0077: owner bits rule", st(0o077, 61000, 0), nil, false},
		{"group 0750", st(0o750, 0, 61000), nil, true},
		{"supplementary group 0710", st(0o710, 0, 50), nil, true},
		{"group denied though other allows", st(0o705, 0, 50), nil, false},
		{"acl names the uid", st(0o700, 0, 0), acl([3]uint32{userObj, 7, 0}, [3]uint32{user, 1, 61000}, [3]uint32{groupObj, 0, 0}, [3]uint32{mask, 1, 0}, [3]uint32{other, 0, 0}), true},
		{"acl entry masked", st(0o700, 0, 0), acl([3]uint32{userObj, 7, 0}, [3]uint32{user, 1, 61000}, [3]uint32{groupObj, 0, 0}, [3]uint32{mask, 0, 0}, [3]uint32{other, 0, 0}), false},
		{"acl group entry", st(0o700, 0, 0), acl([3]uint32{userObj, 7, 0}, [3]uint32{groupObj, 0, 0}, [3]uint32{group, 5, 50}, [3]uint32{mask, 7, 0}, [3]uint32{other, 0, 0}), true},
		{"acl other", st(0o700, 0, 0), acl([3]uint32{userObj, 7, 0}, [3]uint32{groupObj, 0, 0}, [3]uint32{other, 1, 0}), true},
		{"unreadable acl: mode bits", st(0o700, 0, 0), []byte{1, 2, 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unit.may(tc.st, tc.acl, permX); got != tc.want {
				t.Fatalf("may = %v, want %v", got, tc.want)
			}
		})
	}
	if !(identity{uid: 0}).may(st(0o000, 5, 5), nil, permX) {
		t.Fatal("root refused")
	}
}

// TestReach against real directories and a symbolic link.
func TestReach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make directories of other owners (CI runs as root)")
	}
	base, err := os.MkdirTemp("", "sluice-reach-") // not t.TempDir: its parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	nobody := identity{uid: 65534, gid: 65534, switchTo: true}
	mk := func(p string, mode os.FileMode) string {
		p = filepath.Join(base, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	open := mk("open", 0o755)
	private := mk("private", 0o700)
	mk("private/inner", 0o755)
	link := filepath.Join(base, "link")
	os.Symlink(private, link)
	file := filepath.Join(open, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	for _, tc := range []struct {
		path, blocker string
		perm          uint32
	}{
		{filepath.Join(open, "not-yet", "deeper"), "", permX},
		{open, "", permX},
		{filepath.Join(private, "inner"), private, permX},
		{filepath.Join(private, "not-yet"), private, permX},
		{filepath.Join(link, "inner"), private, permX},
		{file, file, permR},
	} {
		err := nobody.reach(tc.path, tc.perm)
		if tc.blocker == "" && err != nil || tc.blocker != "" && (err == nil || !strings.Contains(err.Error(), tc.blocker) || !strings.Contains(err.Error(), "(mode")) {
			t.Errorf("reach %s: %v, want blocked by %q", tc.path, err, tc.blocker)
		}
	}
}

// TestUnsafePathsRefused: a root runner refuses to execute from a
// directory another user can write, a binary another user owns, and a
// runtime or state directory planted as a symbolic link or made by
// someone else; each with one line naming it, before anything starts.
func TestUnsafePathsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("StrictModes applies to a root runner and needs other owners (CI runs as root)")
	}
	base, err := os.MkdirTemp("", "sluice-unsafe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	src, err := os.ReadFile(filepath.Join(binDir, "testsvc"))
	if err != nil {
		t.Fatal(err)
	}
	bin := func(name string, dirOwner, fileOwner int, mode os.FileMode) string {
		d := filepath.Join(base, name)
		os.Mkdir(d, 0o755)
		os.Chown(d, dirOwner, dirOwner)
		f := filepath.Join(d, "testsvc")
		os.WriteFile(f, src, 0o755)
		os.Chmod(f, mode)
		os.Chown(f, fileOwner, fileOwner)
		return d
	}
	good := bin("good", 0, 0, 0o755)
	victim := filepath.Join(base, "victim")
	os.Mkdir(victim, 0o700)
	planted := filepath.Join(base, "planted")
	os.Symlink(victim, planted)
	other := filepath.Join(base, "other")
	os.Mkdir(other, 0o755)
	os.Chown(other, 65534, 65534)
	userDir := filepath.Join(base, "user")
	os.Mkdir(userDir, 0o755)
	os.Chown(userDir, 65534, 65534)
	os.Symlink(good, filepath.Join(userDir, "bin")) // a link in a user's directory
	sticky := filepath.Join(base, "sticky")
	os.Mkdir(sticky, 0o755)
	os.Chmod(sticky, 0o777|os.ModeSticky)
	inSticky := filepath.Join(sticky, "run")
	os.Mkdir(inSticky, 0o755)
	for _, tc := range []struct {
		name           string
		binDir, rt, st string
		want           string // "" : accepted
	}{
		{"root's everything", good, filepath.Join(base, "rt1"), filepath.Join(base, "st1"), ""},
		{"runtime below a sticky directory", good, inSticky, filepath.Join(base, "st2"), ""},
		{"bin dir owned by a user", bin("userbin", 65534, 0, 0o755), filepath.Join(base, "rt3"), filepath.Join(base, "st3"), "userbin is owned by uid 65534, not root"},
		{"binary owned by a user", bin("userfile", 0, 65534, 0o755), filepath.Join(base, "rt4"), filepath.Join(base, "st4"), "(owner uid 65534, mode 0755) may be changed by others"},
		{"binary writable by all", bin("worldfile", 0, 0, 0o757), filepath.Join(base, "rt5"), filepath.Join(base, "st5"), "mode 0757) may be changed by others"},
		{"bin dir through a user's link", filepath.Join(userDir, "bin"), filepath.Join(base, "rt6"), filepath.Join(base, "st6"), "user is owned by uid 65534, not root"},
		{"runtime dir planted as a link", good, planted, filepath.Join(base, "st7"), "runtime directory: " + planted + " is a symbolic link"},
		{"state dir made by another user", good, filepath.Join(base, "rt8"), other, "state directory: " + other + " is owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(`{"units": [{"name": "echo", "exec": ["testsvc"], "accept": true}]}`))
			if err != nil {
				t.Fatal(err)
			}
			r, err := New(Options{Config: cfg, RuntimeDir: tc.rt, BinDir: tc.binDir, StateDir: tc.st,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if r != nil {
				r.Stop()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
	if st, err := os.Stat(victim); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("the link's target was changed: %v %v", st.Mode(), err)
	}
}
