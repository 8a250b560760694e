package runner

import (
	"encoding/binary"
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
