package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"sluice/msg"
	"sluice/rpc/buildid"
	"sluice/suite"
)

// Layout says where an installation put things.
type Layout struct {
	Root       string // DESTDIR, "" for the running system
	LibexecDir string // helper binaries and build-ids.json
	UnitDir    string
	ProfileDir string
	PolkitDir  string
}

// LayoutFor is the layout scripts/install.sh produces for DESTDIR and PREFIX.
func LayoutFor(destdir, prefix string) Layout {
	return Layout{
		Root:       destdir,
		LibexecDir: filepath.Join(destdir, prefix, "libexec/sluice"),
		UnitDir:    filepath.Join(destdir, prefix, "lib/systemd/system"),
		ProfileDir: filepath.Join(destdir, "etc/apparmor.d"),
		PolkitDir:  filepath.Join(destdir, prefix, "share/polkit-1/rules.d"),
	}
}

// Helper names the installed files of one component.
type Helper struct {
	Component string
	Binary    string // file name in LibexecDir
	Socket    string // socket unit
	Service   string // service unit; a template (NAME@.service) for Accept=yes
	Profile   string // AppArmor profile file name
}

// Helpers lists the components that run as services, in call-chain order.
func Helpers() []Helper {
	var hs []Helper
	for _, c := range []string{msg.Frontend, msg.Auth, msg.Policy, msg.Shell, msg.PtyStore, msg.Hangup, msg.Record} {
		bin := suite.BinaryName(c)
		svc := bin + "@.service"
		if c == msg.Frontend || c == msg.PtyStore {
			svc = bin + ".service"
		}
		hs = append(hs, Helper{Component: c, Binary: bin, Socket: bin + ".socket", Service: svc,
			Profile: "usr.libexec.sluice." + bin})
	}
	return hs
}

// Ceiling is the highest systemd-analyze exposure score a component's
// service may have: helpers as tight as a DynamicUser UNIX-socket-only
// service gets, the network-facing frontend a little looser, and the
// hangup helper and a gateway's fleet helper higher by exactly what
// Exempt names.
func Ceiling(component string) float64 {
	switch component {
	case msg.Frontend:
		return 1.5
	case msg.Hangup:
		return 0.7
	case msg.Fleet:
		// Exempt's three network checks weigh 1.0 before scaling.
		return 1.2
	}
	return 0.5
}

// Exempt names the systemd-analyze security checks a helper's service may
// fail beyond those every DynamicUser UNIX-socket helper fails, because
// passing them would undo its job. The hangup helper signals other
// users' processes (CAP_KILL, in its bounding set and, as its account is
// not root, ambient) and must see them in /proc to know whom (so no
// ProtectProc=, which would hide them); the fleet helper's ssh needs
// the network.
func Exempt(component string) []string {
	switch component {
	case msg.Hangup:
		return []string{"AmbientCapabilities=", "CapabilityBoundingSet=~CAP_KILL", "ProtectProc="}
	case msg.Fleet:
		// A gateway's fleet helper (not in Helpers): its ssh reaches the
		// hosts over TCP, at addresses only the admin's hosts.json names.
		return []string{"PrivateNetwork=", "RestrictAddressFamilies=~AF_(INET|INET6)", "IPAddressDeny="}
	}
	return nil
}

// Report is what an audit says about one helper.
type Report struct {
	Component   string            `json:"component"`
	Socket      string            `json:"socket"`               // ListenStream=
	Accept      bool              `json:"accept"`               // one process per connection
	Mode        string            `json:"mode"`                 // SocketMode= in the unit
	Group       string            `json:"group"`                // SocketGroup= in the unit
	Live        *LiveSocket       `json:"live,omitempty"`       // the socket file as it is now
	User        string            `json:"user"`                 // User= (DynamicUser= noted)
	Groups      []string          `json:"supplementary_groups"` // SupplementaryGroups=
	Callers     map[string]string `json:"callers"`              // protocol -> allow spec from ExecStart
	CallerNames map[string]string `json:"callers_resolved"`     // protocol -> spec with ids resolved
	Exposure    *float64          `json:"exposure,omitempty"`   // systemd-analyze security --offline
	ExposureErr string            `json:"exposure_error,omitempty"`
	Profile     string            `json:"apparmor_profile,omitempty"`
	ProfileSum  string            `json:"apparmor_summary,omitempty"`
	BuildIDs    map[string]string `json:"build_ids,omitempty"` // "protocol role" -> ID
	Problems    []string          `json:"problems,omitempty"`
}

// LiveSocket is the socket file's actual mode and owner.
type LiveSocket struct {
	Mode  string `json:"mode"`
	Owner string `json:"owner"`
	Group string `json:"group"`
}

// Inspect gathers the report for one helper. Missing pieces become
// Problems, not errors, so one broken helper does not hide the others.
func Inspect(ctx context.Context, l Layout, h Helper, man *buildid.Manifest) Report {
	r := Report{Component: h.Component, Callers: map[string]string{}, CallerNames: map[string]string{}}
	prob := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }

	if su, err := ParseUnitFile(filepath.Join(l.UnitDir, h.Socket)); err != nil {
		prob("%v", err)
	} else {
		r.Socket = su.Value("Socket", "ListenStream")
		r.Accept = parseBool(su.Value("Socket", "Accept"))
		r.Mode = su.Value("Socket", "SocketMode")
		r.Group = su.Value("Socket", "SocketGroup")
		if strings.HasPrefix(r.Socket, "/") {
			r.Live = statSocket(filepath.Join(l.Root, r.Socket))
		}
	}
	svcPath := filepath.Join(l.UnitDir, h.Service)
	if u, err := ParseUnitFile(svcPath); err != nil {
		prob("%v", err)
	} else {
		r.User = u.Value("Service", "User")
		if parseBool(u.Value("Service", "DynamicUser")) {
			r.User += " (DynamicUser)"
		}
		for _, g := range u.Values("Service", "SupplementaryGroups") {
			r.Groups = append(r.Groups, strings.Fields(g)...)
		}
		if argv, err := SplitCommand(u.Value("Service", "ExecStart")); err != nil {
			prob("ExecStart: %v", err)
		} else {
			r.Callers = Allows(argv)
			for p, spec := range r.Callers {
				r.CallerNames[p] = resolveSpec(spec)
			}
		}
		if _, err := exec.LookPath("systemd-analyze"); err == nil {
			if score, _, err := Exposure(ctx, svcPath); err != nil {
				r.ExposureErr = err.Error()
			} else {
				r.Exposure = &score
				if score > Ceiling(h.Component) {
					prob("exposure %.1f above %.1f", score, Ceiling(h.Component))
				}
			}
		} else {
			r.ExposureErr = "systemd-analyze not installed"
		}
	}
	for _, p := range msg.Protocols {
		if p.Server == h.Component && r.Callers[p.Name] == "" {
			prob("no --allow for %q: only the helper's own uid may call it", p.Name)
		}
	}
	profPath := filepath.Join(l.ProfileDir, h.Profile)
	if p, err := ParseProfileFile(profPath); err != nil {
		prob("%v", err)
	} else {
		r.Profile = p.Name + " -> " + p.Attach
		r.ProfileSum = p.Summary()
	}
	if man != nil {
		r.BuildIDs = map[string]string{}
		for _, e := range man.Entries {
			if e.Component == h.Component {
				r.BuildIDs[e.Protocol+" "+e.Role] = e.BuildID
			}
		}
		if len(r.BuildIDs) == 0 {
			prob("not in the build manifest")
		}
	}
	return r
}

func parseBool(s string) bool {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return true
	}
	return false
}

func statSocket(path string) *LiveSocket {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	ls := &LiveSocket{Mode: fmt.Sprintf("%04o", fi.Mode().Perm()), Owner: strconv.Itoa(int(st.Uid)), Group: strconv.Itoa(int(st.Gid))}
	if u, err := user.LookupId(ls.Owner); err == nil {
		ls.Owner = u.Username
	}
	if g, err := user.LookupGroupId(ls.Group); err == nil {
		ls.Group = g.Name
	}
	return ls
}

// resolveSpec annotates an allow spec with the ids its names have here,
// so the audit shows what the kernel will actually compare.
func resolveSpec(spec string) string {
	var out []string
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		kind, val, _ := strings.Cut(item, ":")
		switch kind {
		case "group":
			if g, err := user.LookupGroup(val); err == nil {
				item += "(" + g.Gid + ")"
			} else {
				item += "(missing)"
			}
		case "user":
			if u, err := user.LookupId(val); err == nil {
				item += "(" + u.Uid + ")"
			} else if u, err := user.Lookup(val); err == nil {
				item += "(" + u.Uid + ")"
			} else {
				item += "(missing)"
			}
		case "uid":
			if u, err := user.LookupId(val); err == nil {
				item += "(" + u.Username + ")"
			}
		}
		out = append(out, item)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// ErrNoInstall is returned when nothing of sluice is installed at a layout.
var ErrNoInstall = errors.New("audit: no sluice units found")

// InspectAll reports on every helper of an installation.
func InspectAll(ctx context.Context, l Layout, man *buildid.Manifest) ([]Report, error) {
	if _, err := os.Stat(filepath.Join(l.UnitDir, "sluice-auth.socket")); err != nil {
		return nil, fmt.Errorf("%w in %s", ErrNoInstall, l.UnitDir)
	}
	var rs []Report
	for _, h := range Helpers() {
		rs = append(rs, Inspect(ctx, l, h, man))
	}
	return rs, nil
}
