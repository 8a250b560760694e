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

// Protocol names: the words of an intent line, and the name --allow flags,
// routes and clients use. Every spelling of the peer graph (units, runner
// config, AppArmor) is checked against Protocols by systemd's and
// apparmor's tests.
const (
	ProtoWebToAuth        = "web to auth"
	ProtoAdminToAuth      = "admin to auth"
	ProtoWebToPolicy      = "web to policy"
	ProtoPolicyToShell    = "policy to shell"
	ProtoWebToPtyStore    = "web to ptystore"
	ProtoAdminToPtyStore  = "admin to ptystore"
	ProtoPtyStoreToHangup = "ptystore to hangup"
	ProtoPtyStoreToPolicy = "ptystore to policy"
	ProtoPolicyToPtyStore = "policy to ptystore"
	ProtoShellToRecord    = "shell to record"
	ProtoAdminToRecord    = "admin to record"
	ProtoWebToRecord      = "web to record"
	ProtoRecordToPolicy   = "record to policy"
	ProtoRecordToHangup   = "record to hangup"
)

// Protocols is every conversation the suite has. A socket only answers the
// client intents of protocols whose Server is its component.
var Protocols = []Protocol{
	{Name: ProtoWebToAuth, Client: Frontend, Server: Auth},
	{Name: ProtoAdminToAuth, Client: Admin, Server: Auth},
	{Name: ProtoWebToPolicy, Client: Frontend, Server: Policy},
	{Name: ProtoPolicyToShell, Client: Policy, Server: Shell},
	{Name: ProtoWebToPtyStore, Client: Frontend, Server: PtyStore},
	{Name: ProtoAdminToPtyStore, Client: Admin, Server: PtyStore},
	{Name: ProtoPtyStoreToHangup, Client: PtyStore, Server: Hangup},
	{Name: ProtoPtyStoreToPolicy, Client: PtyStore, Server: Policy},
	// Policy puts every session it opens into ptystore before it answers,
	// so no caller of create-shell-session holds a shell ptystore does not
	// know of (and cannot end).
	{Name: ProtoPolicyToPtyStore, Client: Policy, Server: PtyStore},
	{Name: ProtoShellToRecord, Client: Shell, Server: Record},
	{Name: ProtoAdminToRecord, Client: Admin, Server: Record},
	{Name: ProtoWebToRecord, Client: Frontend, Server: Record},
	{Name: ProtoRecordToPolicy, Client: Record, Server: Policy},
	// The recorder hands over the master of the shell it records when that
	// session ends, so the shell's own session is ended as ptystore's
	// hangup ends an unrecorded one.
	{Name: ProtoRecordToHangup, Client: Record, Server: Hangup},
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
