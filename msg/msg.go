// Package msg holds the plain request and reply types that sluice's helpers
// exchange over the rpc protocol, and the table of which component speaks
// which protocol to which. It has no behaviour beyond small helpers on data:
// every field is msgpack-tagged so that non-Go clients can speak the suite.
package msg

// Version is the message-set version. It is folded into every intent (see
// Intent), so changing a type incompatibly means bumping it, which makes old
// and new peers refuse each other at the handshake instead of misparsing.
const Version = 1

// IntentPrefix is the application and date part of every intent, in the
// BLAKE3 derive_key context style ("application date purpose").
const IntentPrefix = "sluice 2026-11-24"

// Component names. A component is one executable; its socket under a runtime
// directory is NAME.sock.
const (
	Frontend = "frontend"
	Auth     = "auth"
	Policy   = "policy"
	Shell    = "shell"
	PtyStore = "ptystore"
	Hangup   = "hangup"
	Record   = "record"
	Admin    = "sluicectl"
)

// Protocol is one caller/callee pair. Name goes into the intent line.
type Protocol struct {
	Name   string // e.g. "web to policy"
	Client string // component that dials
	Server string // component that listens
}

// Protocols is every conversation the suite has. A socket only answers the
// client intents of protocols whose Server is its component.
var Protocols = []Protocol{
	{Name: "web to auth", Client: Frontend, Server: Auth},
	{Name: "admin to auth", Client: Admin, Server: Auth},
	{Name: "web to policy", Client: Frontend, Server: Policy},
	{Name: "policy to shell", Client: Policy, Server: Shell},
	{Name: "web to ptystore", Client: Frontend, Server: PtyStore},
	{Name: "admin to ptystore", Client: Admin, Server: PtyStore},
	{Name: "ptystore to hangup", Client: PtyStore, Server: Hangup},
	{Name: "ptystore to policy", Client: PtyStore, Server: Policy},
	{Name: "shell to record", Client: Shell, Server: Record},
	{Name: "admin to record", Client: Admin, Server: Record},
	{Name: "web to record", Client: Frontend, Server: Record},
	{Name: "record to policy", Client: Record, Server: Policy},
	// The recorder hands over the master of the shell it records when that
	// session ends, so the shell's own session is ended as ptystore's
	// hangup ends an unrecorded one.
	{Name: "record to hangup", Client: Record, Server: Hangup},
}

// Intent returns the intent line (without newline) for one side of p.
// role is "client" or "server".
func Intent(p Protocol, role string) string {
	return IntentPrefix + " v" + itoa(Version) + " " + p.Name + " " + role
}

// Lookup returns the protocol with the given name.
func Lookup(name string) (Protocol, bool) {
	for _, list := range [][]Protocol{Protocols, FleetProtocols} {
		for _, p := range list {
			if p.Name == name {
				return p, true
			}
		}
	}
	return Protocol{}, false
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
