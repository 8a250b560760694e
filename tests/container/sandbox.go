// Package container runs each sluice helper binary in a sandbox of its own
// (user, mount, pid, net, ipc and uts namespaces; a read-only root holding
// only what the helper needs; its socket directory bind-mounted in) and
// calls it from outside, as allowed and as forbidden callers of different
// uids. There is no container engine here: the test binary itself is the
// engine. Started with SLUICE_CONTAINER_ROLE=init inside fresh namespaces
// it builds the root, pivots into it and starts the helper (it is the
// sandbox's pid 1, as a runtime's init would be); with ROLE=probe it looks
// around from inside, where the helper stands; with ROLE=caller it makes
// one rpc call from outside under whatever uid it was started as.
//
// # Identity across the user namespace boundary
//
// The kernel translates SCM_CREDENTIALS and SO_PEERCRED into the user
// namespace of the process that receives them. A helper therefore sees a
// caller's uid as the inside number its namespace maps that host uid to,
// and every host uid its namespace does not map as the overflow uid 65534
// (likewise gids and SO_PEERGROUPS). The pid of a caller outside the
// helper's pid namespace reads as 0, in both SCM_CREDENTIALS and
// SO_PEERCRED, so the rpc layer's "same process connected and wrote" check
// still compares equal values. What follows for the design:
//
//   - Allowlists name inside uids. The web caller (host 210001) is mapped
//     to 1001 in every sandbox and the helpers allow uid:1001. A host
//     process whose uid is literally 1001 is not mapped, so it is 65534 to
//     the helper and refused: numbers only mean something inside one
//     namespace.
//   - No allowlist may name 65534: every unmapped caller, host root
//     included, would match it. Host root is nobody to a sandboxed helper,
//     and auth's "uid 0 is always an admin" means the sandbox's own root.
//   - A helper-to-helper call crosses two namespaces: the policy helper
//     runs as inside uid 100 of its sandbox, which is host 310100; the
//     shell sandbox maps host 310100 to its uid 1003, and the shell helper
//     allows uid:1003.
//   - The helpers run as uid 100 with no capabilities (the shell helper as
//     its sandbox's root with CAP_SETUID and CAP_SETGID only, to start
//     shells as other accounts, and CAP_CHOWN and CAP_FOWNER, for its
//     login (sluice-login, with libc, libpam and the host's PAM stack
//     bound in read-only) to hand the tty to the account; the hangup
//     helper as its sandbox's root
//     with CAP_KILL only), so none of them can undo the read-only root or
//     any other mount.
//
// Reaching the socket is decided on the host before any of that: each
// socket directory is mode 0750, owned by the helper's host uid, its group
// the helper's callers (as a RuntimeDirectory with a group would be); the
// sockets are 0666 since --listen has no group option. A caller outside
// the group gets EACCES from connect(2) and never reaches the helper.
package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sluice/internal/testbuf"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// RoleEnv selects what the test binary does when started as a child.
const RoleEnv = "SLUICE_CONTAINER_ROLE"

const specEnv = "SLUICE_CONTAINER_SPEC"

// IDMap maps one inside id to one host id.
type IDMap struct {
	Inside uint32 `json:"inside"`
	Host   uint32 `json:"host"`
}

// Mount is one mount made inside the sandbox before pivoting into Root.
// Kind is "bind" (Source a host path), "tmpfs" or "devpts". Target is the
// path inside the sandbox; it must already exist in Root, since Root is
// read-only once the sandbox runs.
type Mount struct {
	Kind     string `json:"kind"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Options  string `json:"options,omitempty"`
}

// Spec is one sandbox: the root, the mounts and the process to run.
type Spec struct {
	Name     string   `json:"name"`
	Root     string   `json:"root"` // host directory that becomes /
	Hostname string   `json:"hostname"`
	UIDs     []IDMap  `json:"uids"`
	GIDs     []IDMap  `json:"gids"`
	Mounts   []Mount  `json:"mounts"`
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	// The helper's (and the probes') identity, in inside ids, and the
	// capabilities left in its bounding set.
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
	Caps   []int    `json:"caps"`
	// Probe is the host path of the static probe binary; the init opens
	// it before the pivot.
	Probe string `json:"probe"`
	// The init's supplementary groups (inside ids): what it needs to reach
	// the bind sources on the host.
	InitGroups []uint32 `json:"init_groups"`
}

// Sandbox is a running sandbox as the host sees it.
type Sandbox struct {
	Spec   Spec
	Init   *exec.Cmd
	Helper int // host pid of the helper
	// HelperNS is the helper's pid in its own pid namespace. It is not 2:
	// the init's threads take pid numbers too.
	HelperNS int
	Log      *testbuf.Buffer
	ctl      io.WriteCloser
	replies  *bufio.Reader
	exited   chan struct{}
}

// initReply is the init's first line, and the line for each probe.
type initReply struct {
	Error  string       `json:"error,omitempty"`
	Helper int          `json:"helper,omitempty"` // pid inside
	Probe  *ProbeReport `json:"probe,omitempty"`
}

// Start launches exe (this test binary, at a path the sandbox's ids can
// execute) as the init of a new sandbox and waits until the helper runs.
func Start(exe string, spec Spec) (*Sandbox, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{RoleEnv + "=init", specEnv + "=" + string(js), "PATH=/usr/bin:/bin"}
	var uids, gids []syscall.SysProcIDMap
	for _, m := range spec.UIDs {
		uids = append(uids, syscall.SysProcIDMap{ContainerID: int(m.Inside), HostID: int(m.Host), Size: 1})
	}
	for _, m := range spec.GIDs {
		gids = append(gids, syscall.SysProcIDMap{ContainerID: int(m.Inside), HostID: int(m.Host), Size: 1})
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		UidMappings: uids,
		GidMappings: gids,
		// The maps are written by host root, so setgroups stays allowed:
		// the init and the helper get exactly the groups they are given.
		GidMappingsEnableSetgroups: true,
		// Root of the new user namespace: full capabilities there, none
		// outside it.
		Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: spec.InitGroups},
		Pdeathsig:  syscall.SIGKILL,
	}
	s := &Sandbox{Spec: spec, Init: cmd, Log: &testbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = s.Log
	if s.ctl, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.replies = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("container %s: start init: %w", spec.Name, err)
	}
	var r initReply
	if err := s.read(&r); err != nil {
		s.Stop()
		return nil, fmt.Errorf("container %s: %w\n%s", spec.Name, err, s.Log)
	}
	if r.Error != "" {
		s.Stop()
		return nil, fmt.Errorf("container %s: init: %s\n%s", spec.Name, r.Error, s.Log)
	}
	s.HelperNS = r.Helper
	// The helper is the init's only child; find its host pid.
	if s.Helper, err = childOf(cmd.Process.Pid); err != nil {
		s.Stop()
		return nil, fmt.Errorf("container %s: %w", spec.Name, err)
	}
	return s, nil
}

func (s *Sandbox) read(v any) error {
	line, err := s.replies.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("init reply: %w", err)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("init reply %q: %w", line, err)
	}
	return nil
}

// Probe runs a probe inside the sandbox, as the helper runs, and returns
// what it saw.
func (s *Sandbox) Probe() (*ProbeReport, error) {
	if _, err := io.WriteString(s.ctl, "probe\n"); err != nil {
		return nil, fmt.Errorf("container %s: probe: %w", s.Spec.Name, err)
	}
	var r initReply
	if err := s.read(&r); err != nil {
		return nil, fmt.Errorf("container %s: probe: %w", s.Spec.Name, err)
	}
	if r.Error != "" || r.Probe == nil {
		return nil, fmt.Errorf("container %s: probe: %s", s.Spec.Name, r.Error)
	}
	return r.Probe, nil
}

// Stop ends the sandbox: the init terminates the helper and exits, and
// with the pid namespace's init gone the kernel kills whatever is left.
func (s *Sandbox) Stop() error {
	s.ctl.Close()
	err := s.Init.Wait()
	if err != nil {
		return fmt.Errorf("container %s: init: %w", s.Spec.Name, err)
	}
	return nil
}

// childOf returns the only child of pid. Children are listed per thread
// (the one that forked them), so every thread's list is read.
func childOf(pid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var f []string
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		f = append(f, strings.Fields(string(b))...)
	}
	if len(f) != 1 {
		return 0, fmt.Errorf("init %d has children %q, want just the helper", pid, f)
	}
	return strconv.Atoi(f[0])
}

// --- inside: the init ---------------------------------------------------

// RunInit is the sandbox's pid 1. It reports one JSON line on stdout when
// the helper runs (or why it does not), then serves "probe" lines from
// stdin until stdin closes.
func RunInit() {
	out := json.NewEncoder(os.Stdout)
	var spec Spec
	if err := json.Unmarshal([]byte(os.Getenv(specEnv)), &spec); err != nil {
		out.Encode(initReply{Error: err.Error()})
		os.Exit(1)
	}
	os.Unsetenv(specEnv)
	probe, err := os.Open(spec.Probe)
	if err != nil {
		out.Encode(initReply{Error: err.Error()})
		os.Exit(1)
	}
	if err := enter(spec); err != nil {
		out.Encode(initReply{Error: err.Error()})
		os.Exit(1)
	}
	helper := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	helper.Env = spec.Env
	helper.Stdout, helper.Stderr = os.Stderr, os.Stderr
	if err := startAs(helper, spec); err != nil {
		out.Encode(initReply{Error: fmt.Sprintf("start %s: %v", spec.Argv[0], err)})
		os.Exit(1)
	}
	done := make(chan error, 1)
	go func() { done <- helper.Wait() }()
	out.Encode(initReply{Helper: helper.Process.Pid})

	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if lines.Text() != "probe" {
			out.Encode(initReply{Error: fmt.Sprintf("unknown command %q", lines.Text())})
			continue
		}
		r, err := runProbe(probe, spec)
		if err != nil {
			out.Encode(initReply{Error: err.Error()})
			continue
		}
		out.Encode(initReply{Probe: r})
	}
	helper.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "init: %s: %v\n", spec.Argv[0], err)
		os.Exit(1)
	}
}

// enter builds the sandbox's file system and pivots into it. It runs as
// root of the new user namespace, which owns the new mount namespace.
func enter(spec Spec) error {
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	// Nothing done here may propagate back to the host's mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := spec.Root
	// pivot_root wants the new root to be a mount point.
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", root, err)
	}
	for _, m := range spec.Mounts {
		target := filepath.Join(root, m.Target)
		var err error
		switch m.Kind {
		case "bind":
			err = unix.Mount(m.Source, target, "", unix.MS_BIND, "")
			if err == nil && m.ReadOnly {
				err = remountReadOnly(target)
			}
		case "tmpfs":
			err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, m.Options)
		case "devpts":
			err = unix.Mount("devpts", target, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, m.Options)
		default:
			err = errors.New("unknown kind")
		}
		if err != nil {
			return fmt.Errorf("mount %s %s on %s: %w", m.Kind, m.Source, m.Target, err)
		}
	}
	// A proc of the new pid namespace: the helpers read /proc/self/exe
	// for their build ID, and it shows only the sandbox's processes. It
	// is mounted before the pivot: the kernel lets a user namespace mount
	// proc only while a fully visible proc is in its mount namespace.
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; the
	// detach then leaves only the new root, with no directory for the old
	// one to linger in.
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := remountReadOnly("/"); err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	return nil
}

// remountReadOnly makes a bind mount read-only. The flags it already has
// (nosuid, nodev, atime) are kept: a user namespace may not clear flags
// locked on the mounts it inherited, and asking to would be EPERM.
func remountReadOnly(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for _, f := range [][2]int64{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if st.Flags&f[0] != 0 {
			flags |= uintptr(f[1])
		}
	}
	return unix.Mount("", path, "", flags, "")
}

// startAs starts cmd with the helper's identity and bounding set. The
// bounding set is per thread and inherited by what the thread forks, so
// it is cut on a thread of its own that dies with this goroutine.
func startAs(cmd *exec.Cmd, spec Spec) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// No Pdeathsig: it fires when the forking thread ends, which this
		// one does at once. The init is pid 1; when it goes, all go.
		Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: spec.Groups},
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with us
		for c := 0; c <= unix.CAP_LAST_CAP; c++ {
			if slices.Contains(spec.Caps, c) {
				continue
			}
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				errc <- fmt.Errorf("drop capability %d: %w", c, err)
				return
			}
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// runProbe starts the probe: same namespaces, same root, same identity and
// capabilities as the helper. The probe's file was opened before the
// pivot and is not in the sandbox's root.
func runProbe(probe *os.File, spec Spec) (*ProbeReport, error) {
	cmd := exec.Command(fmt.Sprintf("/proc/self/fd/%d", probe.Fd()))
	cmd.Args[0] = "probe"
	cmd.Env = []string{"PROBE_SELF=" + spec.Argv[0]}
	var stdout testbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := startAs(cmd, spec); err != nil {
		return nil, fmt.Errorf("start probe: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	var r ProbeReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("probe said %q: %w", stdout.String(), err)
	}
	return &r, nil
}

// --- inside: the probe --------------------------------------------------

// ProbeReport is what a process standing where the helper stands sees.
type ProbeReport struct {
	PID       int               `json:"pid"`       // the probe's own, as it sees it
	NS        map[string]string `json:"ns"`        // readlink /proc/self/ns/*
	Root      [2]uint64         `json:"root"`      // dev, ino of /
	Processes []string          `json:"processes"` // "pid comm" of every visible process
	Hostname  string            `json:"hostname"`
	IDs       string            `json:"ids"` // Uid: and Gid: lines of /proc/self/status
	CapEff    string            `json:"cap_eff"`
	CapBnd    string            `json:"cap_bnd"`
	UIDMap    string            `json:"uid_map"`
	// Interfaces: "name flags" of every interface.
	Interfaces []string `json:"interfaces"`
	DialErr    string   `json:"dial_err"` // dialling outside (and lo)
	DialErrno  int      `json:"dial_errno"`
	RootRO     bool     `json:"root_ro"` // statfs / has ST_RDONLY
	// Errnos of writes into the root: mkdir /, create in /etc, open the
	// helper's own binary for writing; and of a write to the socket
	// directory, which must work (0), showing the root's errors come from
	// the mount and not from who the probe is.
	MkdirErrno, CreateErrno, WriteSelfErrno, SockDirErrno int
	SockDirErr                                            string
}

// RunProbe looks around and prints a ProbeReport.
func RunProbe() {
	r := ProbeReport{PID: os.Getpid(), NS: map[string]string{}}
	for _, ns := range []string{"user", "mnt", "pid", "net", "ipc", "uts"} {
		r.NS[ns], _ = os.Readlink("/proc/self/ns/" + ns)
	}
	var st unix.Stat_t
	if unix.Stat("/", &st) == nil {
		r.Root = [2]uint64{st.Dev, st.Ino}
	}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
			r.Processes = append(r.Processes, e.Name()+" "+strings.TrimSpace(string(comm)))
		}
	}
	r.Hostname, _ = os.Hostname()
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.Join(strings.Fields(v), " ")
			switch k {
			case "Uid", "Gid", "Groups":
				r.IDs += k + ": " + v + "\n"
			case "CapEff":
				r.CapEff = v
			case "CapBnd":
				r.CapBnd = v
			}
		}
	}
	m, _ := os.ReadFile("/proc/self/uid_map")
	r.UIDMap = strings.Join(strings.Fields(string(m)), " ")
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			r.Interfaces = append(r.Interfaces, i.Name+" "+i.Flags.String())
		}
	} else {
		r.Interfaces = []string{"error: " + err.Error()}
	}
	for _, addr := range []string{"192.0.2.1:80", "127.0.0.1:80"} {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			r.DialErr += addr + ": connected; "
			continue
		}
		r.DialErr += err.Error() + "; "
		var errno syscall.Errno
		if errors.As(err, &errno) && (r.DialErrno == 0 || r.DialErrno == int(errno)) {
			r.DialErrno = int(errno)
		} else {
			r.DialErrno = -1 // the two dials failed differently
		}
	}
	var sfs unix.Statfs_t
	if unix.Statfs("/", &sfs) == nil {
		r.RootRO = sfs.Flags&unix.ST_RDONLY != 0
	}
	r.MkdirErrno = errnoOf(unix.Mkdir("/probe", 0o755))
	fd, err := unix.Open("/etc/probe", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	r.CreateErrno = errnoOf(err)
	fd, err = unix.Open(os.Getenv("PROBE_SELF"), unix.O_WRONLY, 0)
	if err == nil {
		unix.Close(fd)
	}
	r.WriteSelfErrno = errnoOf(err)
	err = os.WriteFile("/run/sluice/probe", []byte("x"), 0o600)
	if err == nil {
		err = os.Remove("/run/sluice/probe")
	}
	if err != nil {
		r.SockDirErr = err.Error()
		r.SockDirErrno = -1
		var errno syscall.Errno
		if errors.As(err, &errno) {
			r.SockDirErrno = int(errno)
		}
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

func errnoOf(err error) int {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return int(errno)
	}
	return -1
}
