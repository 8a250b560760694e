// Package runner is sluice's embedded service manager: on a machine
// without systemd, `sluice run` starts the same helper binaries with the
// environment systemd would give them. See docs/runner.md for the mapping
// (sockets and Accept=, the fd store and NOTIFY_SOCKET, credentials, users).
package runner

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"sluice/sdnotify"
)

//go:embed default.json
var defaultConfig []byte

// DefaultConfig returns the embedded configuration describing the suite.
func DefaultConfig() (*Config, error) { return ParseConfig(defaultConfig) }

// Config is the runner's one configuration file (JSON).
type Config struct {
	// RuntimeDirMode is the runtime directory's mode when the runner is
	// root ("0755" lets units running as other users reach their sockets,
	// whose own modes decide who may connect). Without root it is 0700.
	RuntimeDirMode Mode   `json:"runtime_dir_mode"`
	Units          []Unit `json:"units"`
	// Files are files units read that the runner provides; ${file:NAME}
	// is the path of one.
	Files []File `json:"files,omitempty"`
	// OnReady runs once every unit is started, each argv in turn, as the
	// runner's user, its output (stdout and stderr) going to the runner's
	// stdout for the person who started it; a missing binary is skipped
	// with a log line.
	OnReady [][]string `json:"on_ready"`
	// StopTimeout: how long units get after SIGTERM before SIGKILL.
	StopTimeout Duration `json:"stop_timeout"`
}

// Unit is one service: systemd's NAME.socket plus NAME.service (or
// NAME@.service with Accept=yes).
type Unit struct {
	Name string `json:"name"`
	// Exec is argv; a first word without '/' is a file in --bin-dir.
	// ${...} references are expanded (see Expand).
	Exec []string `json:"exec"`
	// Accept: one process per connection (Accept=yes), else one
	// long-running process handed the listening socket.
	Accept bool `json:"accept"`
	// Notify: the unit says READY=1 when up (Type=notify); the runner
	// waits for that before it prints the URL. Accept=no units only.
	Notify bool `json:"notify"`
	// MaxConnections caps concurrent per-connection processes (default 64,
	// as systemd's MaxConnections=); more connections wait in the backlog.
	MaxConnections int `json:"max_connections"`
	// Socket is the unit's unix socket, RUNTIME_DIR/NAME.sock by default.
	Socket SocketConfig `json:"socket"`
	// NoSocket: the unit has no unix socket (the frontend serves no rpc).
	NoSocket bool `json:"no_socket"`
	// TCP is an address to listen on, passed as an activation fd named
	// "http" (as the frontend's FileDescriptorName=http would).
	TCP string `json:"tcp"`
	// User, Group: whom to run as when the runner is root; the first name
	// (or number) that exists is used, so a list can end in a fallback such
	// as "nobody". Empty: root (or, with DynamicUser, the unit's name).
	// Ignored without root: everything runs as the invoking user.
	User  Names `json:"user"`
	Group Names `json:"group"`
	// DynamicUser: when none of the users exists, run as a uid of the
	// unit's own, allocated as systemd's DynamicUser= does (see
	// dynamicIDs), with no passwd entry.
	DynamicUser         bool              `json:"dynamic_user"`
	SupplementaryGroups []string          `json:"supplementary_groups"`
	Env                 map[string]string `json:"env"`
	// Credentials are files put in the unit's CREDENTIALS_DIRECTORY, as
	// LoadCredential= does: a bare name is STATE_DIR/credentials/NAME,
	// created as 32 random bytes if missing; "NAME:PATH" copies PATH.
	Credentials []string `json:"credentials"`
	// StateDirectory: STATE_DIR/NAME, owned by the unit's user, in
	// $STATE_DIRECTORY (StateDirectory=).
	StateDirectory bool `json:"state_directory"`
	// PublicDirectory: STATE_DIR/NAME, 0755, owned by the unit's user and
	// made before any unit starts, for what the unit publishes for the
	// others to read (auth's revocation list). Under systemd a tmpfiles.d
	// "d" line and ReadWritePaths= do this.
	PublicDirectory string `json:"public_directory,omitempty"`
	// Setsid: Accept=yes instances start in a session of their own, as
	// systemd starts every service process, instead of a process group in
	// the runner's session (cheaper at exit, see spawn.Attr.Setsid). The
	// recording helper needs it: it takes the pty the frontend sees as its
	// controlling terminal, so that ending that pty's session (the hangup
	// helper) reaches it.
	Setsid bool `json:"setsid,omitempty"`
	// FDStoreMax is FileDescriptorStoreMax= (Accept=no units only).
	FDStoreMax int `json:"fdstore_max"`
	// RestartSec, RestartMaxSec: the first and the largest delay before an
	// Accept=no unit that exited is started again; the delay doubles on
	// every exit that comes before the unit was up for RestartMaxSec.
	RestartSec    Duration `json:"restart_sec"`
	RestartMaxSec Duration `json:"restart_max_sec"`
	Umask         *Mode    `json:"umask"`
}

// File is a file units read, such as a helper's configuration: the first
// of Use that exists, else Default (with ${...} references expanded)
// written to STATE_DIR/files/NAME, 0644, at every start. Not for secrets
// (those are credentials).
type File struct {
	Name    string   `json:"name"`
	Use     []string `json:"use"`
	Default string   `json:"default"`
}

// SocketConfig is a unit's unix socket (ListenStream=, SocketMode=,
// SocketUser=, SocketGroup=, FileDescriptorName=).
type SocketConfig struct {
	Path   string `json:"path"`
	Mode   Mode   `json:"mode"`
	User   string `json:"user"`
	Group  string `json:"group"`
	FDName string `json:"fd_name"`
}

// Names is one name or a list of alternatives.
type Names []string

func (n *Names) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*n = Names{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a name or a list of names: %w", err)
	}
	*n = many
	return nil
}

// Mode is a file mode written as an octal string ("0660").
type Mode os.FileMode

func (m *Mode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("mode: want an octal string: %w", err)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return fmt.Errorf("mode %q: want octal up to 07777", s)
	}
	*m = Mode(v)
	return nil
}

// MarshalJSON writes the mode back as the octal string it was read from.
func (m Mode) MarshalJSON() ([]byte, error) {
	return json.Marshal(fmt.Sprintf("%04o", uint32(m)))
}

// Duration is a time.Duration written as a string ("100ms").
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string ParseDuration reads.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// Defaults, as systemd's where it has one.
const (
	DefaultMaxConnections = 64
	DefaultRestartSec     = 100 * time.Millisecond
	DefaultRestartMaxSec  = 30 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultSocketMode     = 0o666 // SocketMode= default
	HTTPFDName            = "http"
)

// LoadConfig reads a JSON config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("runner: config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("runner: config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and checks a config, filling in defaults.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("runner: config: %w", err)
	}
	if c.RuntimeDirMode == 0 {
		c.RuntimeDirMode = 0o755
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = Duration(DefaultStopTimeout)
	}
	seen := map[string]bool{}
	for i := range c.Units {
		u := &c.Units[i]
		if err := u.check(); err != nil {
			return nil, fmt.Errorf("runner: config: unit %d (%s): %w", i, u.Name, err)
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("runner: config: unit %s defined twice", u.Name)
		}
		seen[u.Name] = true
	}
	files := map[string]bool{}
	for i, f := range c.Files {
		if !validName(f.Name) {
			return nil, fmt.Errorf("runner: config: file %d (%s): name must be non-empty, without / : $ { } or spaces", i, f.Name)
		}
		if files[f.Name] {
			return nil, fmt.Errorf("runner: config: file %s defined twice", f.Name)
		}
		files[f.Name] = true
		if strings.Contains(f.Default, "${file:") {
			return nil, fmt.Errorf("runner: config: file %s: a default cannot refer to files", f.Name)
		}
	}
	return &c, nil
}

func (u *Unit) check() error {
	if !validName(u.Name) {
		return errors.New("name must be non-empty, without / : $ { } or spaces")
	}
	if len(u.Exec) == 0 || u.Exec[0] == "" {
		return errors.New("exec is empty")
	}
	if u.Accept && (u.NoSocket || u.TCP != "") {
		return errors.New("accept units take exactly their unix socket")
	}
	if u.Accept && (u.FDStoreMax > 0 || u.Notify) {
		return errors.New("fdstore_max and notify need accept=false")
	}
	if u.NoSocket && u.TCP == "" {
		return errors.New("no_socket without tcp leaves nothing to listen on")
	}
	if u.MaxConnections <= 0 {
		u.MaxConnections = DefaultMaxConnections
	}
	if u.Socket.Mode == 0 {
		u.Socket.Mode = DefaultSocketMode
	}
	if u.Socket.FDName == "" {
		// systemd names an fd after its socket unit by default.
		u.Socket.FDName = "sluice-" + u.Name + ".socket"
	}
	if err := sdnotify.ValidName(u.Socket.FDName); err != nil {
		return err
	}
	if u.RestartSec <= 0 {
		u.RestartSec = Duration(DefaultRestartSec)
	}
	if u.RestartMaxSec < u.RestartSec {
		u.RestartMaxSec = Duration(max(DefaultRestartMaxSec, time.Duration(u.RestartSec)))
	}
	for _, c := range u.Credentials {
		name, _, _ := strings.Cut(c, ":")
		if name == "" || strings.ContainsAny(name, "/") || name == "." || name == ".." {
			return fmt.Errorf("credential %q: want NAME or NAME:PATH", c)
		}
	}
	return nil
}

func validName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.ContainsAny(n, "/:$ {}\t\n")
}

// Unit returns the unit named name.
func (c *Config) Unit(name string) *Unit {
	for i := range c.Units {
		if c.Units[i].Name == name {
			return &c.Units[i]
		}
	}
	return nil
}

// DefaultConfigJSON is the embedded config as written.
func DefaultConfigJSON() ([]byte, error) { return defaultConfig, nil }
