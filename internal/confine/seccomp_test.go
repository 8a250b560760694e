package confine

import (
	"fmt"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// run interprets a filter the way the kernel runs it, for the
// instructions build emits; an instruction it does not know fails the
// test rather than guess.
func run(t *testing.T, f prog, arch, nr uint32, args [6]uint64) uint32 {
	ret, _ := runSteps(t, f, arch, nr, args)
	return ret
}

// runSteps is run that also counts the instructions taken.
func runSteps(t *testing.T, f prog, arch, nr uint32, args [6]uint64) (ret uint32, steps int) {
	t.Helper()
	var acc uint32
	for pc := 0; pc < len(f); pc++ {
		steps++
		in := f[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			switch {
			case in.K == offNR:
				acc = nr
			case in.K == offArch:
				acc = arch
			case in.K >= offArg0 && in.K < offArg0+48 && (in.K-offArg0)%8 == 0:
				acc = uint32(args[(in.K-offArg0)/8])
			default:
				t.Fatalf("pc %d: load of offset %d", pc, in.K)
			}
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			var ok bool
			switch in.Code &^ (unix.BPF_JMP | unix.BPF_K) {
			case unix.BPF_JEQ:
				ok = acc == in.K
			case unix.BPF_JGE:
				ok = acc >= in.K
			case unix.BPF_JSET:
				ok = acc&in.K != 0
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K, steps
		default:
			t.Fatalf("pc %d: instruction %#x", pc, in.Code)
		}
	}
	t.Fatalf("ran off the end of a filter of %d instructions", len(f))
	return 0, steps
}

// want is the policy the filter must implement, told in Go from the
// same lists: the first rule that names a number decides.
func want(p Profile, landlock bool, arch, nr uint32, args [6]uint64) uint32 {
	has := func(l []uintptr) bool { return slices.Contains(l, uintptr(nr)) }
	a0, a1 := uint32(args[0]), uint32(args[1])
	switch {
	case arch != nativeArch, nr >= x32Bit:
		return retKill
	case has(killed):
		return retKill
	case !p.Exec && (nr == unix.SYS_EXECVE || nr == unix.SYS_EXECVEAT):
		return retKill
	case nr == unix.SYS_CLONE3:
		return retENOSYS
	case landlock && nr == unix.SYS_LANDLOCK_RESTRICT_SELF:
		if a1 == 0 {
			return retAllow
		}
		return retEPERM
	case nr == unix.SYS_SOCKET:
		if a0 == unix.AF_UNIX || p.Inet && (a0 == unix.AF_INET || a0 == unix.AF_INET6) {
			return retAllow
		}
		return retEPERM
	case p.Signal && !p.Exec && (nr == unix.SYS_KILL || nr == unix.SYS_PIDFD_OPEN || nr == unix.SYS_PIDFD_SEND_SIGNAL):
		return retAllow
	case !p.Exec && nr == unix.SYS_CLONE:
		if a0&unix.CLONE_THREAD != 0 {
			return retAllow
		}
		return retEPERM
	case !p.Exec && (nr == unix.SYS_FORK || nr == unix.SYS_VFORK):
		return retEPERM
	case p.Exec && has(spawning), has(allowed):
		return retAllow
	}
	return retEPERM
}

// TestFilterDecides runs every profile's filter over every system call
// number (and past them), both architectures' tags, the x32 bit, and the
// arguments it looks at, against want.
func TestFilterDecides(t *testing.T) {
	if nativeArch == 0 {
		t.Skip("no table for this architecture")
	}
	argSets := [][6]uint64{{}, {unix.AF_UNIX}, {unix.AF_INET}, {unix.AF_INET6}, {unix.AF_NETLINK},
		{unix.CLONE_THREAD | unix.CLONE_VM}, {unix.CLONE_VM}, {^uint64(0), 0}, {3, 1}, {3, 4}}
	for _, p := range []Profile{{}, {Exec: true}, {Inet: true}, {Signal: true}, {Signal: true, Exec: true}, {Pty: true}} {
		for _, landlock := range []bool{false, true} {
			t.Run(fmt.Sprintf("%+v/landlock=%v", p, landlock), func(t *testing.T) {
				f := build(p, landlock)
				for _, arch := range []uint32{nativeArch, unix.AUDIT_ARCH_I386} {
					for nr := uint32(0); nr < 1100; nr++ {
						for _, n := range []uint32{nr, nr | x32Bit} {
							for _, args := range argSets {
								if got, w := run(t, f, arch, n, args), want(p, landlock, arch, n, args); got != w {
									t.Fatalf("arch %#x nr %d args %v: %#x, want %#x", arch, n, args, got, w)
								}
							}
						}
					}
				}
			})
		}
	}
}

// TestFilterShort: the search keeps the filter and every path through it
// short, which is what makes installing it cheap (the kernel compiles
// every instruction, and walks the filter once per number).
func TestFilterShort(t *testing.T) {
	f := build(Profile{Exec: true, Signal: true}, true)
	longest := 0
	for nr := uint32(0); nr < 1100; nr++ {
		_, steps := runSteps(t, f, nativeArch, nr, [6]uint64{})
		longest = max(longest, steps)
	}
	// A flat list takes two instructions per number it names.
	flat := 0
	for _, a := range rules(Profile{Exec: true, Signal: true}, true) {
		if a != unnamed {
			flat += 2
		}
	}
	if longest > 24 || len(f) >= flat {
		t.Errorf("%d instructions (a flat list: %d), longest path %d", len(f), flat, longest)
	}
	t.Logf("%d instructions, longest path %d", len(f), longest)
}
