package shell

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Account is one passwd entry, with the login shell, which os/user does
// not expose.
type Account struct {
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
}

// PasswdFile is the file LookupAccount reads.
var PasswdFile = "/etc/passwd"

// ErrNoAccount: no passwd entry of that name.
var ErrNoAccount = errors.New("no such unix user")

// LookupAccount finds name in PasswdFile. Only local accounts are served:
// the embedded backend exists for development machines and CI, where
// accounts come from files; machined resolves accounts itself (NSS
// included) inside the target machine.
func LookupAccount(name string) (Account, error) {
	f, err := os.Open(PasswdFile)
	if err != nil {
		return Account{}, fmt.Errorf("shell: passwd: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name+":") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) != 7 {
			return Account{}, fmt.Errorf("shell: passwd entry of %s has %d fields, want 7", name, len(fields))
		}
		uid, err1 := strconv.ParseUint(fields[2], 10, 32)
		gid, err2 := strconv.ParseUint(fields[3], 10, 32)
		if err1 != nil || err2 != nil {
			return Account{}, fmt.Errorf("shell: passwd entry of %s: bad uid or gid", name)
		}
		return Account{Name: name, UID: uint32(uid), GID: uint32(gid), Home: fields[5], Shell: fields[6]}, nil
	}
	if err := sc.Err(); err != nil {
		return Account{}, fmt.Errorf("shell: passwd: %w", err)
	}
	return Account{}, fmt.Errorf("%w %q", ErrNoAccount, name)
}
