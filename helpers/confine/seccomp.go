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

// onNR emits "if nr == n { ret }" with the number in the accumulator.
func (p *prog) onNR(n uintptr, ret uint32) {
	p.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(n), 0, 1)
	p.ret(ret)
}

// build returns the filter for a profile. Its shape is flat (every test
// jumps at most over one instruction) so no jump offset can overflow
// however long the lists get, and it looks only at the number and, for
// socket and clone, the first argument.
//
// landlock says Apply still has a ruleset to enforce once the filter is
// on: landlock_restrict_self with flags 0 stays allowed (the only landlock
// call that does: it can only narrow what the process may do).
func build(p Profile, landlock bool) prog {
	var f prog
	f.load(offArch)
	f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, nativeArch, 1, 0)
	f.ret(retKill)
	f.load(offNR)
	f.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32Bit, 0, 1)
	f.ret(retKill)

	for _, n := range killed {
		f.onNR(n, retKill)
	}
	if !p.Exec {
		f.onNR(unix.SYS_EXECVE, retKill)
		f.onNR(unix.SYS_EXECVEAT, retKill)
	}
	f.onNR(unix.SYS_CLONE3, retENOSYS)
	if landlock {
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_LANDLOCK_RESTRICT_SELF, 0, 4)
		f.load(offArg1)
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0, 0, 1)
		f.ret(retAllow)
		f.ret(retEPERM)
		f.load(offNR)
	}

	// socket(domain, ...): AF_UNIX only, unless the profile says inet.
	inet := retEPERM
	if p.Inet {
		inet = retAllow
	}
	f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_SOCKET, 0, 7)
	f.load(offArg0)
	f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_UNIX, 3, 0)
	f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_INET, 3, 0)
	f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_INET6, 2, 0)
	f.ret(retEPERM)
	f.ret(retAllow)
	f.ret(inet)
	f.load(offNR)

	// clone(flags, ...): threads always; processes only with Exec.
	if p.Signal && !p.Exec {
		f.onNR(unix.SYS_KILL, retAllow)
		f.onNR(unix.SYS_PIDFD_OPEN, retAllow)
		f.onNR(unix.SYS_PIDFD_SEND_SIGNAL, retAllow)
	}
	if !p.Exec {
		f.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_CLONE, 0, 4)
		f.load(offArg0)
		f.jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, unix.CLONE_THREAD, 0, 1)
		f.ret(retAllow)
		f.ret(retEPERM)
		f.load(offNR)
		f.onNR(unix.SYS_FORK, retEPERM)
		f.onNR(unix.SYS_VFORK, retEPERM)
	} else {
		for _, n := range spawning {
			f.onNR(n, retAllow)
		}
	}

	for _, n := range allowed {
		f.onNR(n, retAllow)
	}
	f.ret(retEPERM)
	return f
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
