package runner

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// identity is whom a unit runs as.
type identity struct {
	uid, gid uint32
	groups   []uint32
	name     string // user name, for USER/LOGNAME
	home     string
	shell    string
	switchTo bool // runner is root and must switch (even to root: groups)
	dynamic  bool // allocated by the runner, no passwd entry
}

// nologin is the shell of a dynamic user, as nss-systemd reports it.
const nologin = "/usr/sbin/nologin"

func (id identity) credential() *syscall.Credential {
	if !id.switchTo {
		return nil
	}
	return &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups}
}

// self is the runner's own identity: what every unit gets without root.
func self() (identity, error) {
	u, err := user.Current()
	if err != nil {
		return identity{}, fmt.Errorf("runner: who am I: %w", err)
	}
	return identity{
		uid: uint32(os.Getuid()), gid: uint32(os.Getgid()),
		name: u.Username, home: u.HomeDir, shell: loginShell(u.Username),
	}, nil
}

// resolveIdentity picks the first existing user and group among the
// unit's alternatives. Supplementary groups that do not exist are left out
// with a warning: on a machine without the sysusers accounts the runner
// still works, with less separation. A dynamic_user unit whose users do
// not exist gets ok=false: New allocates its ids once it knows every
// static unit's (dynamicIDs).
func resolveIdentity(u *Unit, root bool, log *slog.Logger) (id identity, ok bool, err error) {
	if !root {
		me, err := self()
		return me, err == nil, err
	}
	names := u.User
	if len(names) == 0 {
		names = Names{"root"}
		if u.DynamicUser {
			// systemd names a dynamic user after its unit.
			names = Names{u.Name}
		}
	}
	var acct *user.User
	for _, n := range names {
		if a, err := lookupUser(n); err == nil {
			acct = a
			break
		}
	}
	if acct == nil {
		if u.DynamicUser {
			return identity{name: names[0], home: "/", shell: nologin, switchTo: true, dynamic: true}, false, nil
		}
		return identity{}, false, fmt.Errorf("runner: unit %s: none of the users %v exists", u.Name, []string(names))
	}
	uid, _ := strconv.ParseUint(acct.Uid, 10, 32)
	gid, _ := strconv.ParseUint(acct.Gid, 10, 32)
	id = identity{uid: uint32(uid), gid: uint32(gid), name: acct.Username, home: acct.HomeDir,
		shell: loginShell(acct.Username), switchTo: true}
	if err := resolveGroups(u, &id, log); err != nil {
		return identity{}, false, err
	}
	return id, true, nil
}

// resolveGroups sets the unit's primary group (the first of its group list
// that exists, else the account's) and its supplementary groups.
func resolveGroups(u *Unit, id *identity, log *slog.Logger) error {
	if len(u.Group) > 0 {
		found := false
		for _, n := range u.Group {
			if g, err := lookupGroup(n); err == nil {
				id.gid, found = g, true
				break
			}
		}
		if !found && !id.dynamic {
			return fmt.Errorf("runner: unit %s: none of the groups %v exists", u.Name, []string(u.Group))
		}
	}
	// Like systemd, a unit gets only the groups it names: not the
	// account's own from /etc/group. The primary group comes first.
	id.groups = []uint32{id.gid}
	for _, n := range u.SupplementaryGroups {
		if strings.Contains(n, "${") {
			continue // another unit's gid: see resolveGroupRefs
		}
		g, err := lookupGroup(n)
		if err != nil {
			log.Warn("runner: supplementary group missing, left out", "unit", u.Name, "group", n)
			continue
		}
		if g != id.gid {
			id.groups = append(id.groups, g)
		}
	}
	return nil
}

// resolveGroupRefs adds the supplementary groups that are references
// (${gid:UNIT}), once every unit, dynamic ones included, has its ids: a
// unit joins the group another unit's socket is owned by, as the record
// unit joins ptystore's to reach policy.sock, which systemd's units do
// by a sysusers group.
func (r *Runner) resolveGroupRefs() error {
	if !r.root {
		return nil // every unit is the invoking user
	}
	for _, u := range r.order {
		for _, n := range u.cfg.SupplementaryGroups {
			if !strings.Contains(n, "${") {
				continue
			}
			s, err := r.Expand(n)
			if err != nil {
				return fmt.Errorf("runner: unit %s: supplementary group: %w", u.cfg.Name, err)
			}
			g, err := lookupGroup(s)
			if err != nil {
				return fmt.Errorf("runner: unit %s: supplementary group %q: %w", u.cfg.Name, n, err)
			}
			if !slices.Contains(u.id.groups, g) {
				u.id.groups = append(u.id.groups, g)
			}
		}
	}
	return nil
}

func lookupUser(n string) (*user.User, error) {
	if _, err := strconv.ParseUint(n, 10, 32); err == nil {
		if u, err := user.LookupId(n); err == nil {
			return u, nil
		}
		// A bare uid with no passwd entry is fine, as with systemd.
		return &user.User{Uid: n, Gid: n, Username: n, HomeDir: "/"}, nil
	}
	return user.Lookup(n)
}

func lookupGroup(n string) (uint32, error) {
	if v, err := strconv.ParseUint(n, 10, 32); err == nil {
		return uint32(v), nil
	}
	g, err := user.LookupGroup(n)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(v), err
}

// loginShell reads the account's shell from /etc/passwd (os/user does not
// report it); "/bin/sh" when it cannot be found.
func loginShell(name string) string {
	b, err := os.ReadFile("/etc/passwd")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ":")
			if len(f) == 7 && f[0] == name && f[6] != "" {
				return f[6]
			}
		}
	}
	return "/bin/sh"
}

var refRE = regexp.MustCompile(`\$\{([a-z_]+)(?::([A-Za-z0-9_.-]+))?\}`)

// Expand replaces ${...} references in s:
//
//	${uid} ${gid} ${user}     the runner's own (${user}: the invoking user,
//	                          $SUDO_USER under sudo)
//	${uid:UNIT} ${gid:UNIT}   the uid/gid UNIT runs as
//	${user:UNIT}              its user name (a dynamic user's has no
//	                          passwd entry: refer to it by ${uid:UNIT})
//	${url:UNIT}               what a browser opens for UNIT's tcp address
//	${file:NAME}              the path of a file of the config's files
//	${runtime_dir} ${state_dir} ${bin_dir}
//
// so a config can grant one unit's socket to another unit's uid whatever
// account that resolved to.
func (r *Runner) Expand(s string) (string, error) {
	var bad error
	out := refRE.ReplaceAllStringFunc(s, func(m string) string {
		v, err := r.expandRef(m)
		if err != nil && bad == nil {
			bad = err
		}
		return v
	})
	if bad == nil && strings.Contains(out, "${") {
		bad = fmt.Errorf("runner: malformed reference in %q", s)
	}
	return out, bad
}

func (r *Runner) expandRef(m string) (string, error) {
	sub := refRE.FindStringSubmatch(m)
	key, arg := sub[1], sub[2]
	if key == "file" && arg != "" {
		f := r.files[arg]
		if f == nil {
			return m, fmt.Errorf("runner: %q: no file %q in the config's files", m, arg)
		}
		return f.path, nil
	}
	id := r.self
	var us *unit
	if arg != "" {
		if us = r.units[arg]; us == nil {
			return m, fmt.Errorf("runner: %q: no unit %q", m, arg)
		}
		id = us.id
	}
	switch {
	case key == "uid":
		return strconv.FormatUint(uint64(id.uid), 10), nil
	case key == "gid":
		return strconv.FormatUint(uint64(id.gid), 10), nil
	case key == "user" && us != nil:
		return id.name, nil
	case key == "user":
		return r.invokingUser(), nil
	case key == "url" && us != nil:
		if us.cfg.TCP == "" {
			return m, fmt.Errorf("runner: %q: unit %s has no tcp address", m, arg)
		}
		if _, port, err := net.SplitHostPort(us.cfg.TCP); err != nil || port == "0" {
			return m, fmt.Errorf("runner: %q: unit %s's tcp address %q has no fixed port", m, arg, us.cfg.TCP)
		}
		return browserURL(us.cfg.TCP), nil
	case key == "runtime_dir" && us == nil:
		return r.opts.RuntimeDir, nil
	case key == "state_dir" && us == nil:
		return r.opts.StateDir, nil
	case key == "bin_dir" && us == nil:
		return r.opts.BinDir, nil
	}
	return m, fmt.Errorf("runner: unknown reference %q", m)
}

func (r *Runner) invokingUser() string {
	if os.Geteuid() == 0 {
		if s := os.Getenv("SUDO_USER"); s != "" {
			return s
		}
	}
	if s := os.Getenv("USER"); s != "" {
		return s
	}
	return r.self.name
}

// ownerIDs resolves a socket's user and group (names, numbers or
// references); "" keeps the runner's.
func (r *Runner) ownerIDs(userSpec, groupSpec string) (int, int, error) {
	uid, gid := -1, -1
	if userSpec != "" {
		s, err := r.Expand(userSpec)
		if err != nil {
			return 0, 0, err
		}
		u, err := lookupUser(s)
		if err != nil {
			return 0, 0, fmt.Errorf("runner: socket user %q: %w", s, err)
		}
		v, _ := strconv.Atoi(u.Uid)
		uid = v
	}
	if groupSpec != "" {
		s, err := r.Expand(groupSpec)
		if err != nil {
			return 0, 0, err
		}
		g, err := lookupGroup(s)
		if err != nil {
			return 0, 0, fmt.Errorf("runner: socket group %q: %w", s, err)
		}
		gid = int(g)
	}
	return uid, gid, nil
}
