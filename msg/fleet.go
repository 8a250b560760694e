package msg

// The fleet (docs/fleet.md): a gateway reaches other hosts' sluice suites
// through their sshd, as a relay account whose forced command is
// sluice-relay. The protocols are kept apart from Protocols so that a
// suite without hosts is exactly what it was: no unit, socket or allowlist
// of the single-host suite learns of them.

// Fleet components: the gateway's helper that holds the SSH client key,
// and the relay the host's sshd runs as its forced command.
const (
	Fleet = "fleet"
	Relay = "relay"
)

// Fleet protocol names.
const (
	ProtoWebToFleet        = "web to fleet"
	ProtoAdminToFleet      = "admin to fleet"
	ProtoGatewayToPolicy   = "gateway to policy"
	ProtoGatewayToPtyStore = "gateway to ptystore"
)

// FleetProtocols are the conversations a fleet adds: on the gateway the
// frontend and sluicectl ask the fleet helper; on a host the relay asks
// the host's own policy and ptystore.
var FleetProtocols = []Protocol{
	{Name: ProtoWebToFleet, Client: Frontend, Server: Fleet},
	{Name: ProtoAdminToFleet, Client: Admin, Server: Fleet},
	{Name: ProtoGatewayToPolicy, Client: Relay, Server: Policy},
	{Name: ProtoGatewayToPtyStore, Client: Relay, Server: PtyStore},
}

// Fleet operations.
const (
	// auth, "web to auth": a host grant for the grant's user
	OpHostGrant = "host-grant"
	// auth, "admin to auth": the gateway's public key, for hosts to pin
	OpGatewayKey = "gateway-key"
	// fleet, "web to fleet" and "admin to fleet"
	OpFleetHosts = "fleet-hosts"
	// fleet, "web to fleet"
	OpFleetCall = "fleet-call"
	OpFleetOpen = "fleet-open"
	// fleet, "admin to fleet"
	OpFleetCheck = "fleet-check"
	// auth, "admin to auth": an admin host grant for the calling admin
	OpHostAdminGrant = "host-admin-grant"
	// fleet, "admin to fleet": one admin call (OpPtyList, OpPtyDrop) to a
	// host's ptystore, carried with an admin host grant
	OpFleetAdminCall = "fleet-admin-call"
	// relay only: is the relay there, and which host is it
	OpRelayPing = "relay-ping"
)

// HostGrant is a grant bound to one host of the fleet: Ed25519-signed by
// the gateway's auth helper, which alone holds the private key, over a
// grant it verified. A host's policy and ptystore check it with the
// gateway's public key and their own host name, so a host that sees one
// cannot use it on another, and cannot make one.
type HostGrant struct {
	User       string `msgpack:"user"`
	Credential []byte `msgpack:"credential,omitempty"`
	Host       string `msgpack:"host"`
	Issued     int64  `msgpack:"issued"`  // unix milliseconds
	Expires    int64  `msgpack:"expires"` // unix milliseconds
	Nonce      []byte `msgpack:"nonce"`
	Sig        []byte `msgpack:"sig"` // Ed25519, 64 bytes
	// Admin: a gateway admin's grant (User is the admin's account name),
	// good only for a host's admin ops its ptystore lets the gateway make
	// (--gateway-admin), never for a user's; signed under a context of
	// its own, so flipping the flag breaks the signature.
	Admin bool `msgpack:"admin,omitempty"`
}

// HostAdminGrantRequest asks auth for an admin HostGrant on Host for the
// admin the kernel names as the caller.
type HostAdminGrantRequest struct {
	Host string `msgpack:"host"`
}

// HostGrantRequest asks auth for a HostGrant for Grant.User on Host.
type HostGrantRequest struct {
	Grant Grant  `msgpack:"grant"`
	Host  string `msgpack:"host"`
}

type HostGrantReply struct {
	HostGrant HostGrant `msgpack:"host_grant"`
}

// GatewayKeyReply is the gateway's Ed25519 public key (32 bytes).
type GatewayKeyReply struct {
	Public []byte `msgpack:"public"`
}

// GatewayArgs are the arguments of every op on "gateway to policy" and
// "gateway to ptystore": the op's usual arguments, whose grant field the
// host fills in from HostGrant once it verified it.
type GatewayArgs struct {
	HostGrant *HostGrant `msgpack:"host_grant,omitempty"`
	Args      []byte     `msgpack:"args"` // msgpack of the op's usual argument type
}

// FleetCall asks the fleet helper to carry one call to Host's Service
// (Policy or PtyStore) through that host's relay. Args is the op's usual
// msgpack argument type; its grant is ignored, HostGrant stands for it.
// For OpFleetOpen, Op is OpCreateShellSession or OpPtyGet and Rows/Cols
// the terminal's first size.
type FleetCall struct {
	Host      string    `msgpack:"host"`
	Service   string    `msgpack:"service"`
	Op        string    `msgpack:"op"`
	Args      []byte    `msgpack:"args"`
	HostGrant HostGrant `msgpack:"host_grant"`
	Rows      uint16    `msgpack:"rows,omitempty"`
	Cols      uint16    `msgpack:"cols,omitempty"`
}

// FleetOpenReply comes with one fd: a pty master whose other side is the
// ssh session to the host's relay, which streams the host's session.
type FleetOpenReply struct {
	Host    string      `msgpack:"host"`
	Session SessionInfo `msgpack:"session"`
	Mode    string      `msgpack:"mode"`
	Epoch   uint32      `msgpack:"epoch,omitempty"`
	Limits  Limits      `msgpack:"limits,omitempty"`
	Rule    string      `msgpack:"rule,omitempty"`
}

// FleetHost is one configured host as the gateway knows it.
type FleetHost struct {
	Name    string `msgpack:"name"`
	Address string `msgpack:"address"`
	Port    int    `msgpack:"port"`
	User    string `msgpack:"user"`
}

type FleetHostsReply struct {
	Hosts []FleetHost `msgpack:"hosts"`
}

// FleetCheck asks the fleet helper to reach Host's relay and ask its name.
type FleetCheck struct {
	Host string `msgpack:"host"`
}

type FleetCheckReply struct {
	Host      string `msgpack:"host"`
	RelayHost string `msgpack:"relay_host"` // the name the host's forced command gives
	ElapsedMs int64  `msgpack:"elapsed_ms"`
}

// RelayRequest is the one frame the gateway writes to the relay. Stream:
// after the reply the relay streams the session's pty over its stdio,
// its input framed as Framing says (a stream request must name
// RelayFramingV1; the relay refuses any other).
type RelayRequest struct {
	Service   string     `msgpack:"service"`
	Op        string     `msgpack:"op"`
	Args      []byte     `msgpack:"args"`
	HostGrant *HostGrant `msgpack:"host_grant,omitempty"`
	Stream    bool       `msgpack:"stream,omitempty"`
	Framing   int        `msgpack:"framing,omitempty"`
}

// RelayFramingV1: the relay has no pty (`ssh -T`); gateway → host is
// the recorder's session-socket frames, input and resize
// (internal/termsock, read with termsock.Reader), host → gateway the
// session's raw output.
const RelayFramingV1 = 1

// RelayReply is the relay's one frame back: the host helper's error
// frame text ("code: message"), else its payload.
// Framing, on a stream's answer: the framing the relay reads its input
// with; the gateway sends no byte of input to a relay that names none
// (an older one would type the frames into the shell).
type RelayReply struct {
	Error   string `msgpack:"error,omitempty"`
	Payload []byte `msgpack:"payload,omitempty"`
	Framing int    `msgpack:"framing,omitempty"`
}

// RelayPingReply names the host the relay serves (its forced command's
// --host).
type RelayPingReply struct {
	Host string `msgpack:"host"`
}

// RelayReady is the line the relay writes before it reads its request:
// when it is on a pty, the pty is raw by then, so nothing of the request
// is echoed or translated.
const RelayReady = "sluice-relay v1 ready\n"

// GatewayKey, FleetHosts and RelayPing are the empty arguments of their ops.
type (
	GatewayKey struct{}
	FleetHosts struct{}
	RelayPing  struct{}
)
