// Package login turns a started shell into a login, as login(1) and sshd
// make one: the account checks a passkey sign-in does not replace (expiry,
// a locked account, /etc/nologin, PAM's account phase), a PAM session,
// utmp/wtmp, the tty handed to the user and back, and umask and
// environment from login.defs and PAM.
//
// The PAM part needs the C library and libpam, so it lives in one small
// cgo binary, sluice-login, started by the shell helper on each new pty
// and kept for the life of the session (someone must close the PAM
// session, mark the utmp entry dead and take the tty back). Every other
// binary, the shell helper included, stays static: this file and
// client.go are pure Go.
//
// It serves no socket, so it is no helper of its own: it lives under the
// shell helper, the one component that runs it, and speaks only to the
// shell helper that started it (a request on stdin, its status on stdout).
package login

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrRefused wraps every refusal: the account may not log in now. Its text
// is meant for the person at the page.
var ErrRefused = errors.New("login refused")

// Files read by the checks; variables so that tests can point them at
// their own copies.
var (
	ShadowFile   = "/etc/shadow"
	LoginDefs    = "/etc/login.defs"
	NologinFiles = []string{"/var/run/nologin", "/etc/nologin"}
)

// maxNologin bounds what is read of a nologin file for the message.
const maxNologin = 512

// CheckAccount refuses what login and su refuse before any PAM module is
// asked: an expired account, a locked password, and (for everyone but
// root) a nologin file. PAM's account phase runs afterwards in
// sluice-login and may refuse more (pam_access, pam_time, ...).
//
// "Locked" is a password field of "!" followed by a hash, what passwd -l
// and usermod -L make of a password. A field of "!" or "*" alone is an
// account that never had a password, which is what useradd creates and what
// a passkey-only account is: not locked (sshd with UsePAM lets such
// accounts in by key too). To shut such an account out, expire it
// (usermod -e 1), as passwd(1) itself advises.
func CheckAccount(name string, uid uint32, now time.Time) error {
	sp, err := lookupShadow(name)
	if err != nil && !errors.Is(err, errNoShadow) {
		return err
	}
	if err == nil {
		if sp.expire >= 0 && now.Unix()/86400 >= sp.expire {
			return fmt.Errorf("%w: account %s has expired", ErrRefused, name)
		}
		if len(sp.password) > 1 && sp.password[0] == '!' {
			return fmt.Errorf("%w: account %s is locked", ErrRefused, name)
		}
	}
	if uid != 0 {
		if text, ok := Nologin(); ok {
			return fmt.Errorf("%w: logins are disabled on this host: %s", ErrRefused, text)
		}
	}
	return nil
}

// Nologin reports whether a nologin file exists, and its text (as
// pam_nologin shows it), or a default when the file is empty.
func Nologin() (string, bool) {
	for _, p := range NologinFiles {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(f, maxNologin))
		f.Close()
		text := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
		if text == "" {
			text = "the system is going down or is closed for maintenance (" + p + ")"
		}
		return text, true
	}
	return "", false
}

type shadow struct {
	password string
	expire   int64 // days since the epoch; -1: never
}

var errNoShadow = errors.New("no shadow entry")

// lookupShadow reads the account's /etc/shadow line. An account without
// one (NSS-only, or a system without shadow passwords) has nothing there
// to refuse, so that is not an error for the caller.
func lookupShadow(name string) (shadow, error) {
	f, err := os.Open(ShadowFile)
	if errors.Is(err, os.ErrNotExist) {
		return shadow{}, errNoShadow
	}
	if err != nil {
		return shadow{}, fmt.Errorf("login: shadow: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 9 || fields[0] != name {
			continue
		}
		sp := shadow{password: fields[1], expire: -1}
		if fields[7] != "" {
			n, err := strconv.ParseInt(fields[7], 10, 64)
			if err != nil {
				// A broken entry refuses rather than lets in, as
				// pam_unix does with a field it cannot parse.
				return shadow{}, fmt.Errorf("%w: account %s: unreadable expiry date %q in %s", ErrRefused, name, fields[7], ShadowFile)
			}
			sp.expire = n
		}
		return sp, nil
	}
	if err := sc.Err(); err != nil {
		return shadow{}, fmt.Errorf("login: shadow: %w", err)
	}
	return shadow{}, errNoShadow
}

// Defs are the login.defs settings a login applies.
type Defs struct {
	Umask    os.FileMode
	Path     string
	SuPath   string
	TTYGroup string
}

// ReadDefs reads LoginDefs, with login's own defaults for what is missing.
func ReadDefs() Defs {
	d := Defs{
		Umask:    0o022,
		Path:     "/usr/local/bin:/usr/bin:/bin",
		SuPath:   "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		TTYGroup: "tty",
	}
	f, err := os.Open(LoginDefs)
	if err != nil {
		return d
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "UMASK":
			if n, err := strconv.ParseUint(fields[1], 8, 32); err == nil && n <= 0o777 {
				d.Umask = os.FileMode(n)
			}
		case "ENV_PATH":
			d.Path = strings.TrimPrefix(fields[1], "PATH=")
		case "ENV_SUPATH":
			d.SuPath = strings.TrimPrefix(fields[1], "PATH=")
		case "TTYGROUP":
			d.TTYGroup = fields[1]
		}
	}
	return d
}
