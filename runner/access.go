package runner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// What a unit must reach is checked once, before anything starts, against
// the uid, gid and groups the unit will run as. A unit that cannot reach
// its runtime directory, state directory or files would otherwise fail on
// every start with EACCES and be restarted forever; the operator gets one
// message naming the unit and the path instead. The kernel stays the judge
// at run time: this only predicts its answer from the same mode bits and
// POSIX ACLs it reads.

// permission bits as they sit in each rwx triplet
const (
	permX = 1
	permR = 4
)

// may says whether id gets perm on a file with stat st and POSIX access
// ACL acl (nil: none), by the kernel's rules (acl_permission_check and
// posix_acl_permission), ignoring capabilities: units other than root's
// run without any.
func (id identity) may(st *unix.Stat_t, acl []byte, perm uint32) bool {
	if id.uid == 0 {
		return true
	}
	mode := st.Mode
	if id.uid == st.Uid {
		return (mode>>6)&perm == perm
	}
	if acl != nil {
		if granted, ok := aclGrants(acl, id, st, perm); ok {
			return granted
		}
	}
	if id.inGroup(st.Gid) {
		return (mode>>3)&perm == perm
	}
	return mode&perm == perm
}

func (id identity) inGroup(gid uint32) bool {
	return id.gid == gid || slices.Contains(id.groups, gid)
}

// aclGrants evaluates a system.posix_acl_access value (version 2: a 4-byte
// header, then 8-byte entries tag u16, perm u16, id u32, little-endian) for
// a caller who is not the owner. ok is false for a value it cannot read,
// and the mode bits decide.
func aclGrants(acl []byte, id identity, st *unix.Stat_t, perm uint32) (granted, ok bool) {
	const (
		tagUser     = 0x02
		tagGroupObj = 0x04
		tagGroup    = 0x08
		tagMask     = 0x10
		tagOther    = 0x20
	)
	if len(acl) < 4 || binary.LittleEndian.Uint32(acl) != 2 || (len(acl)-4)%8 != 0 {
		return false, false
	}
	type entry struct {
		tag, perm uint16
		id        uint32
	}
	var es []entry
	mask := uint16(7)
	for b := acl[4:]; len(b) > 0; b = b[8:] {
		e := entry{binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint32(b[4:])}
		if e.tag == tagMask {
			mask = e.perm
		}
		es = append(es, e)
	}
	p := uint16(perm)
	for _, e := range es {
		if e.tag == tagUser && e.id == id.uid {
			return e.perm&mask&p == p, true
		}
	}
	matched := false
	for _, e := range es {
		if e.tag == tagGroupObj && id.inGroup(st.Gid) || e.tag == tagGroup && id.inGroup(e.id) {
			matched = true
			if e.perm&mask&p == p {
				return true, true
			}
		}
	}
	if matched {
		return false, true
	}
	for _, e := range es {
		if e.tag == tagOther {
			return e.perm&p == p, true
		}
	}
	return false, false
}

// statACL is stat(2) plus the access ACL, if the file has one.
func statACL(path string) (*unix.Stat_t, []byte, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 512)
	n, err := unix.Getxattr(path, "system.posix_acl_access", buf)
	if err != nil || n <= 0 {
		return &st, nil, nil
	}
	return &st, buf[:n], nil
}

// errUnreachable is a path a unit's user cannot use.
type errUnreachable struct {
	path, blocker, why string
}

func (e *errUnreachable) Error() string {
	if e.blocker == e.path {
		return fmt.Sprintf("%s: %s", e.path, e.why)
	}
	return fmt.Sprintf("%s: %s %s", e.path, e.blocker, e.why)
}

// reach checks that id can search every directory from / down to path's
// deepest existing directory (what does not exist yet the runner creates,
// for the unit), and has perm on path itself if it exists and perm is not
// zero. Symbolic links are followed as the kernel would for the unit: the
// resolved path is what is checked.
func (id identity) reach(path string, perm uint32) error {
	path = filepath.Clean(path)
	existing, rest := path, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	resolved, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dirs := []string{"/"}
	cur := "/"
	for _, c := range strings.Split(strings.TrimPrefix(resolved, "/"), "/") {
		if c == "" {
			continue
		}
		cur = filepath.Join(cur, c)
		dirs = append(dirs, cur)
	}
	target := ""
	if rest == "" {
		// path exists: its parents need search, path itself perm.
		target, dirs = dirs[len(dirs)-1], dirs[:len(dirs)-1]
	}
	for _, d := range dirs {
		st, acl, err := statACL(d)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return &errUnreachable{path, d, "is not a directory"}
		}
		if !id.may(st, acl, permX) {
			return &errUnreachable{path, d, fmt.Sprintf("(mode %04o, owner %d:%d) cannot be traversed", st.Mode&0o7777, st.Uid, st.Gid)}
		}
	}
	if target != "" && perm != 0 {
		st, acl, err := statACL(target)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if !id.may(st, acl, perm) {
			what := "read"
			if perm == permX {
				what = "used"
			}
			return &errUnreachable{path, target, fmt.Sprintf("(mode %04o, owner %d:%d) cannot be %s", st.Mode&0o7777, st.Uid, st.Gid, what)}
		}
	}
	return nil
}

// openExecutable opens a unit's binary once, for every start to exec by fd
// (spawn.Attr.Exec): the unit's user needs execute permission on the file
// alone, whatever the directories above it allow (a checkout in /root or
// a 0700 home), and the file that runs is the one checked here and named
// in the build manifest, not whatever is at the path later.
func openExecutable(path string, id identity) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		f.Close()
		return nil, fmt.Errorf("%s: not an executable file", path)
	}
	if id.switchTo && !id.may(&st, nil, permX) {
		f.Close()
		return nil, fmt.Errorf("%s: mode %04o, owner %d:%d: uid %d may not execute it", path, st.Mode&0o7777, st.Uid, st.Gid, id.uid)
	}
	return f, nil
}

// checkReach lists, for every unit that runs as another user, what it
// could not reach: the runtime directory (sockets, manifest, credentials,
// notify socket), its state directory and the files its command line or
// environment names. One line per unit and path.
func (r *Runner) checkReach() []string {
	var bad []string
	for _, u := range r.order {
		if !u.id.switchTo || u.id.uid == 0 {
			continue
		}
		type need struct {
			path string
			perm uint32
		}
		needs := []need{{r.opts.RuntimeDir, permX}}
		if p := u.cfg.Socket.Path; p != "" && !u.cfg.NoSocket {
			needs = append(needs, need{filepath.Dir(p), permX})
		}
		if u.cfg.StateDirectory {
			needs = append(needs, need{r.opts.StateDir, permX})
		}
		for _, name := range u.fileRefs() {
			if f := r.files[name]; f != nil {
				needs = append(needs, need{f.path, permR})
			}
		}
		for _, n := range needs {
			if err := u.id.reach(n.path, n.perm); err != nil {
				bad = append(bad, fmt.Sprintf("unit %s (uid %d): %v", u.cfg.Name, u.id.uid, err))
			}
		}
	}
	return bad
}

// fileRefs are the names of the config files (${file:NAME}) the unit's
// command line and environment refer to.
func (u *unit) fileRefs() []string {
	var names []string
	scan := func(s string) {
		for {
			i := strings.Index(s, "${file:")
			if i < 0 {
				return
			}
			s = s[i+len("${file:"):]
			j := strings.IndexByte(s, '}')
			if j < 0 {
				return
			}
			if !slices.Contains(names, s[:j]) {
				names = append(names, s[:j])
			}
			s = s[j+1:]
		}
	}
	for _, a := range u.cfg.Exec {
		scan(a)
	}
	for _, v := range u.cfg.Env {
		scan(v)
	}
	return names
}

// securePath is sshd's StrictModes for a path the runner trusts: every
// component that exists, from / down (as written and with its symbolic
// links resolved), is owned by root or by owner, and a directory others
// may write to is sticky (like /tmp), so nobody else can rename, replace
// or plant anything along it. Without that, whoever could would choose
// what the runner executes as root, or where it writes.
func securePath(path string, owner uint32) error {
	check := func(p string) error {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		if st.Uid != 0 && st.Uid != owner {
			return fmt.Errorf("%s is owned by uid %d, not root", p, st.Uid)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil // the directory holding it was checked; its target is, below
		}
		if st.Mode&0o022 != 0 && (st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&unix.S_ISVTX == 0) {
			return fmt.Errorf("%s is writable by others (mode %04o)", p, st.Mode&0o7777)
		}
		return nil
	}
	walk := func(p string) error {
		cur := "/"
		if err := check(cur); err != nil {
			return err
		}
		for _, c := range strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/") {
			if c == "" {
				continue
			}
			cur = filepath.Join(cur, c)
			if err := check(cur); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(path); err != nil {
		return err
	}
	// The same for where the links lead, as far as the path exists.
	existing := filepath.Clean(path)
	for {
		if _, err := os.Stat(existing); err == nil || filepath.Dir(existing) == existing {
			break
		}
		existing = filepath.Dir(existing)
	}
	resolved, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if resolved != existing {
		return walk(resolved)
	}
	return nil
}

// ownDir refuses a runtime or state directory that exists as anything but
// a real directory of the runner's own: a symbolic link (another user's
// /tmp/sluice-UID pointing into a victim's home, which MkdirAll and chmod
// would follow) or a directory someone else made.
func ownDir(dir string, owner uint32) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("%s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%s is a symbolic link", dir)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s is not a directory", dir)
	case st.Uid != owner:
		return fmt.Errorf("%s is owned by uid %d, not %d (this runner)", dir, st.Uid, owner)
	}
	return nil
}

// checkSafe lists the paths the runner would trust but should not: the
// runtime and state directories (for every runner), and, for a root
// runner, the binaries it executes and every directory above them.
func (r *Runner) checkSafe() []string {
	var bad []string
	me := uint32(os.Geteuid())
	for _, d := range []struct{ what, path string }{{"runtime directory", r.opts.RuntimeDir}, {"state directory", r.opts.StateDir}} {
		err := ownDir(d.path, me)
		if err == nil {
			err = securePath(d.path, me)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", d.what, err))
		}
	}
	if !r.root {
		return bad
	}
	seen := map[string]bool{}
	for _, u := range r.order {
		if u.exe == nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(u.exe.Fd()), &st); err != nil {
			bad = append(bad, fmt.Sprintf("unit %s: %s: %v", u.cfg.Name, u.path, err))
			continue
		}
		if st.Uid != 0 || st.Mode&0o022 != 0 {
			bad = append(bad, fmt.Sprintf("unit %s: %s (owner uid %d, mode %04o) may be changed by others than root; a root runner executes only root's files",
				u.cfg.Name, u.path, st.Uid, st.Mode&0o7777))
			continue
		}
		dir := filepath.Dir(u.path)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if err := securePath(dir, 0); err != nil {
			bad = append(bad, fmt.Sprintf("unit %s: %v: whoever can write there chooses what runs as root", u.cfg.Name, err))
		}
	}
	return bad
}
