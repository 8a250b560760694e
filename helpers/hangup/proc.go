package hangup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// proc is one process as /proc/PID/stat shows it: only what deciding and
// signalling needs.
type proc struct {
	pid, ppid, pgrp, sid int
	tty                  uint64 // controlling terminal, tty_nr
	state                byte
	start                uint64 // starttime: with pid, names this process and no later one
}

func (p proc) dead() bool { return p.state == 'Z' || p.state == 'X' || p.state == 'x' }

// readStat reads /proc/PID/stat under root. The command name is in
// parentheses and may hold anything, spaces and ')' included, so the
// fields are counted from the last ')'.
func readStat(root string, pid int) (proc, error) {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, err
	}
	return parseStat(pid, b)
}

var errStat = errors.New("unreadable /proc stat")

func parseStat(pid int, b []byte) (proc, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return proc{}, fmt.Errorf("%w: pid %d", errStat, pid)
	}
	// After "comm)": state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime priority nice
	// num_threads itrealvalue starttime ...
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return proc{}, fmt.Errorf("%w: pid %d: %d fields", errStat, pid, len(f))
	}
	p := proc{pid: pid, state: f[0][0]}
	var errs [5]error
	p.ppid, errs[0] = strconv.Atoi(f[1])
	p.pgrp, errs[1] = strconv.Atoi(f[2])
	p.sid, errs[2] = strconv.Atoi(f[3])
	var tty int64
	tty, errs[3] = strconv.ParseInt(f[4], 10, 64)
	p.tty = uint64(uint32(tty))
	p.start, errs[4] = strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(errs[:]...); err != nil {
		return proc{}, fmt.Errorf("%w: pid %d: %v", errStat, pid, err)
	}
	return p, nil
}

// scan lists the live processes keep accepts. A process that goes away
// while being read is skipped: it is no longer there to signal.
func scan(root string, keep func(proc) bool) ([]proc, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("hangup: list %s: %w", root, err)
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		p, err := readStat(root, pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, errStat) || errors.Is(err, errESRCH) {
				continue
			}
			return nil, fmt.Errorf("hangup: %w", err)
		}
		if !p.dead() && keep(p) {
			out = append(out, p)
		}
	}
	return out, nil
}
