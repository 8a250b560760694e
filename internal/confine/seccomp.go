package confine

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccomp_data offsets.
const (
	offNR   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits on little-endian
	offArg1 = 24
)

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	// ENOSYS for clone3 makes the Go runtime and libc fall back to
	// clone, whose flags the filter can see.
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	// x32 system calls on x86_64 carry this bit; a filter that only looks
	// at numbers would let them through under other names.
	x32Bit = 0x40000000
)

type prog []unix.SockFilter

func (p *prog) stmt(code uint16, k uint32) { *p = append(*p, unix.SockFilter{Code: code, K: k}) }
func (p *prog) jump(code uint16, k uint32, jt, jf uint8) {
	*p = append(*p, unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k})
}
func (p *prog) ret(k uint32) { p.stmt(unix.BPF_RET|unix.BPF_K, k) }
func (p *prog) load(off uint32) {
	p.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off)
}

// answer is what the filter does with one system call number; the
// last three look at an argument first.
type answer uint8

const (
	unnamed answer = iota // EPERM, as for every number no list names
	eperm
	allow
	kill
	enosys
	socketArg   // socket(domain, ...): AF_UNIX, and inet if the profile says so
	cloneArg    // clone(flags, ...): threads only
	landlockArg // landlock_restrict_self(fd, flags): flags 0 only
)

// rules is the answer for each number up to the highest any list names.
// Where the lists overlap the first word wins: killed over everything,
// then the profile's switches, then the allowlist.
//
// landlock says Apply still has a ruleset to enforce once the filter is
// on: landlock_restrict_self with flags 0 stays allowed (the only landlock
// call that does: it can only narrow what the process may do).
func rules(p Profile, landlock bool) []answer {
	var top uintptr
	for _, l := range [][]uintptr{killed, spawning, allowed} {
		for _, n := range l {
			top = max(top, n)
		}
	}
	for _, n := range []uintptr{unix.SYS_EXECVE, unix.SYS_EXECVEAT, unix.SYS_CLONE3, unix.SYS_LANDLOCK_RESTRICT_SELF,
		unix.SYS_SOCKET, unix.SYS_KILL, unix.SYS_PIDFD_OPEN, unix.SYS_PIDFD_SEND_SIGNAL, unix.SYS_CLONE, unix.SYS_FORK, unix.SYS_VFORK} {
		top = max(top, n)
	}
	r := make([]answer, top+1)
	set := func(a answer, ns ...uintptr) {
		for _, n := range ns {
			if r[n] == unnamed {
				r[n] = a
			}
		}
	}
	set(kill, killed...)
	if !p.Exec {
		set(kill, unix.SYS_EXECVE, unix.SYS_EXECVEAT)
	}
	set(enosys, unix.SYS_CLONE3)
	if landlock {
		set(landlockArg, unix.SYS_LANDLOCK_RESTRICT_SELF)
	}
	set(socketArg, unix.SYS_SOCKET)
	if p.Signal && !p.Exec {
		set(allow, unix.SYS_KILL, unix.SYS_PIDFD_OPEN, unix.SYS_PIDFD_SEND_SIGNAL)
	}
	if !p.Exec {
		set(cloneArg, unix.SYS_CLONE)
		set(eperm, unix.SYS_FORK, unix.SYS_VFORK)
	} else {
		set(allow, spawning...)
	}
	set(allow, allowed...)
	return r
}

// build returns the filter for a profile: the architecture check, then a
// binary search over ranges of system call numbers that get the same
// answer. A search rather than a list of tests because the kernel runs the
// filter over every number when it installs it (to cache the ones always
// allowed) and converts and compiles every instruction: with a list of 200
// tests, installing it was 0.4 ms of every helper's start
// (bench/NOTES.md). A jump past a lower half longer than a conditional
// jump reaches goes through BPF_JA, whose offset is 32 bits, so no jump
// can overflow however long the lists get.
func build(p Profile, landlock bool) prog {
	f := make(prog, 0, 320)
	f.load(offArch)
	f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, nativeArch, 1, 0)
	f.ret(retKill)
	f.load(offNR)
	f.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32Bit, 0, 1)
	f.ret(retKill)
	inet := uint32(retEPERM)
	if p.Inet {
		inet = retAllow
	}
	f.search(ranges(rules(p, landlock)), inet)
	return f
}

// span is the numbers from lo up to the next span's lo, and their answer.
type span struct {
	lo uint32
	a  answer
}

// ranges cuts the numbers from 0 up into spans of one answer each; the
// last span runs to the x32 bit.
func ranges(r []answer) []span {
	out := make([]span, 0, 128)
	for n, a := range append(r, unnamed) {
		if a == unnamed {
			a = eperm
		}
		if len(out) == 0 || out[len(out)-1].a != a {
			out = append(out, span{uint32(n), a})
		}
	}
	return out
}

// size is how many instructions emit takes for a.
func (a answer) size() int {
	switch a {
	case socketArg:
		return 7
	case cloneArg, landlockArg:
		return 4
	}
	return 1
}

// emit appends a's code, the number in the accumulator; it always
// returns.
func (f *prog) emit(a answer, inet uint32) {
	switch a {
	case allow:
		f.ret(retAllow)
	case kill:
		f.ret(retKill)
	case enosys:
		f.ret(retENOSYS)
	case socketArg:
		f.load(offArg0)
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_UNIX, 2, 0)
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_INET, 2, 0)
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_INET6, 1, 2)
		f.ret(retAllow)
		f.ret(inet)
		f.ret(retEPERM)
	case cloneArg:
		f.load(offArg0)
		f.jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, unix.CLONE_THREAD, 0, 1)
		f.ret(retAllow)
		f.ret(retEPERM)
	case landlockArg:
		f.load(offArg1)
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0, 0, 1)
		f.ret(retAllow)
		f.ret(retEPERM)
	default:
		f.ret(retEPERM)
	}
}

// searchSize is how many instructions search takes for spans.
func searchSize(spans []span) int {
	if len(spans) == 1 {
		return spans[0].a.size()
	}
	mid := len(spans) / 2
	lower := searchSize(spans[:mid])
	jump := 1
	if lower > 0xff {
		jump = 2
	}
	return jump + lower + searchSize(spans[mid:])
}

// search emits the search over spans (sorted by lo, the first from 0),
// with the number in the accumulator; every path through it returns.
func (f *prog) search(spans []span, inet uint32) {
	if len(spans) == 1 {
		f.emit(spans[0].a, inet)
		return
	}
	mid := len(spans) / 2
	lower := searchSize(spans[:mid])
	if lower <= 0xff {
		f.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, spans[mid].lo, uint8(lower), 0)
	} else {
		f.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, spans[mid].lo, 0, 1)
		f.stmt(unix.BPF_JMP|unix.BPF_JA, uint32(lower))
	}
	f.search(spans[:mid], inet)
	f.search(spans[mid:], inet)
}

// seccomp installs p's filter on every thread; ruleset is the Landlock
// ruleset Apply enforces next (-1: none).
func seccomp(p Profile, ruleset int) error {
	f := build(p, ruleset >= 0)
	fp := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	// no_new_privs is set on this thread (Apply); TSYNC puts the filter
	// on every thread of the process at once, or fails as a whole, and
	// sets no_new_privs on each thread it syncs.
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fp))); e != 0 {
		return fmt.Errorf("install filter of %d instructions: %w", len(f), e)
	}
	return nil
}
