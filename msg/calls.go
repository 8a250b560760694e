package msg

import "github.com/vmihailenco/msgpack/v5"

// Request is the envelope of every request frame: the operation name and its
// arguments, themselves msgpack. One socket serves a few operations; the
// intent already fixed which set, Op picks one of them.
type Request struct {
	Op   string             `msgpack:"op"`
	Args msgpack.RawMessage `msgpack:"args"`
}

// Operation names, grouped by the component that serves them.
const (
	// auth, "web to auth"
	OpRegisterBegin  = "register-begin"
	OpRegisterFinish = "register-finish"
	OpLoginBegin     = "login-begin"
	OpLoginFinish    = "login-finish"
	// auth, "web to auth", on behalf of the grant's user
	OpPasskeyList   = "passkey-list" // also "admin to auth", for any user
	OpPasskeyRevoke = "passkey-revoke"
	OpPasskeyAdd    = "passkey-add"
	// auth, "admin to auth"
	OpEnroll      = "enroll"
	OpUserList    = "user-list"
	OpUserDisable = "user-disable"
	OpUserEnable  = "user-enable"
	OpUserRemove  = "user-remove"
	// policy, "web to policy"
	OpCreateShellSession = "create-shell-session"
	OpAllowedTargets     = "allowed-targets"
	// policy, "web to policy" and "ptystore to policy"
	OpAuditScope = "audit-scope"
	// policy, "ptystore to policy"
	OpCheckSessions = "check-sessions"
	// shell, "policy to shell"
	OpOpenShell = "open-shell"
	// ptystore, "web to ptystore" (and list/drop on "admin to ptystore")
	OpPtyPut   = "pty-put"
	OpPtyGet   = "pty-get"
	OpPtyList  = "pty-list"
	OpPtyDrop  = "pty-drop"
	OpPtyShare = "pty-share"
	// ptystore, "web to ptystore": which sessions have a viewer (limits)
	OpPtyViewers = "pty-viewers"
	// ptystore, "web to ptystore": an auditor's read-only view
	OpPtyAuditList = "pty-audit-list"
	OpPtyAuditGet  = "pty-audit-get"
	// ptystore, "admin to ptystore" only
	OpPtyRecheck = "pty-recheck"
	// hangup, "ptystore to hangup" and "record to hangup"
	OpHangup = "hangup"
	// record, "shell to record"
	OpRecordSession = "record-session"
	// record, "admin to record" and "web to record" (the latter with a
	// grant whose user policy lets audit, see OpCheckAudit)
	OpRecList   = "rec-list"
	OpRecOpen   = "rec-open"
	OpRecVerify = "rec-verify" // "admin to record" only
	// policy, "record to policy"
	OpCheckAudit = "check-audit"
)

// Error codes a caller can act on. They are the first word of an rpc error
// frame ("denied: alice may not be root on web1"); see docs/protocol.md.
// The codes the rpc layer itself sends are rpc's: rpc.CodeBadRequest
// (undecodable or invalid arguments), rpc.CodeForbidden (the
// kernel-reported caller may not use this socket or op) and
// rpc.CodeInternal (the helper failed; details are in its log).
const (
	CodeDenied   = "denied"    // policy said no; the text is fit for the user
	CodeFailed   = "failed"    // allowed, but the shell could not be opened
	CodeBadGrant = "bad-grant" // grant or share token forged, expired or for someone else
	CodeNotFound = "not-found" // no such session, user, credential or token
	CodeBusy     = "busy"      // a limit of the helper's was reached (streams, store lock); try again
)

// Grant is what a successful passkey login yields: proof, checkable by any
// holder of the grant key (auth, policy, ptystore), that User signed in.
// MAC is a keyed BLAKE3 over the other fields; see package grant.
//
// Credential is the ID of the passkey the login used, so revoking that
// passkey revokes the grants it yielded (package revoke); the MAC covers it.
type Grant struct {
	User       string `msgpack:"user"`
	Credential []byte `msgpack:"credential,omitempty"` // passkey credential ID
	Issued     int64  `msgpack:"issued"`               // unix milliseconds
	Expires    int64  `msgpack:"expires"`              // unix milliseconds
	Nonce      []byte `msgpack:"nonce"`                // 16 random bytes
	MAC        []byte `msgpack:"mac"`                  // 32 bytes
}

// --- auth ---------------------------------------------------------------

// RegisterBegin starts a passkey registration. Token is the one-time
// enrollment token an admin created; it names the user.
type RegisterBegin struct {
	Token string `msgpack:"token"`
}

// RegisterBeginReply carries the WebAuthn creation options as the JSON the
// browser's navigator.credentials.create wants, and the sealed ceremony
// state the caller must hand back unchanged on finish.
type RegisterBeginReply struct {
	User    string `msgpack:"user"`
	Options []byte `msgpack:"options"` // JSON
	State   []byte `msgpack:"state"`   // sealed, opaque
}

// RegisterFinish completes registration with the browser's attestation
// response (JSON as produced by PublicKeyCredential.toJSON or equivalent).
type RegisterFinish struct {
	Token      string `msgpack:"token"`
	State      []byte `msgpack:"state"`
	Credential []byte `msgpack:"credential"` // JSON
	// Name is the user's label for the passkey ("laptop"), optional; at
	// most MaxPasskeyName bytes of printable UTF-8.
	Name string `msgpack:"name,omitempty"`
}

// MaxPasskeyName bounds RegisterFinish.Name.
const MaxPasskeyName = 64

type RegisterFinishReply struct {
	User         string `msgpack:"user"`
	CredentialID []byte `msgpack:"credential_id"`
}

// LoginBegin starts a discoverable-credential (usernameless) login; User may
// be set to restrict allowed credentials to one user's.
type LoginBegin struct {
	User string `msgpack:"user,omitempty"`
}

type LoginBeginReply struct {
	Options []byte `msgpack:"options"` // JSON for navigator.credentials.get
	State   []byte `msgpack:"state"`   // sealed, opaque
}

type LoginFinish struct {
	State     []byte `msgpack:"state"`
	Assertion []byte `msgpack:"assertion"` // JSON
}

type LoginFinishReply struct {
	Grant Grant `msgpack:"grant"`
}

// Enroll creates a one-time registration token for User (admin only).
// With UnlessEnrolled, a user who has a passkey already gets none: the
// reply's Token is empty and Passkeys says how many there are.
type Enroll struct {
	User           string `msgpack:"user"`
	TTLSeconds     int64  `msgpack:"ttl_seconds,omitempty"` // 0: helper default
	UnlessEnrolled bool   `msgpack:"unless_enrolled,omitempty"`
}

type EnrollReply struct {
	User     string `msgpack:"user"`
	Token    string `msgpack:"token"`              // empty: none made (UnlessEnrolled)
	Expires  int64  `msgpack:"expires"`            // unix milliseconds
	Passkeys int    `msgpack:"passkeys,omitempty"` // the user's passkeys before this call
}

// UserList asks for every user (admin only).
type UserList struct{}

// UserInfo is one user as admins see them.
type UserInfo struct {
	Name     string `msgpack:"name"`
	Created  int64  `msgpack:"created"` // unix milliseconds
	Disabled bool   `msgpack:"disabled,omitempty"`
	Passkeys int    `msgpack:"passkeys"`
	LastUsed int64  `msgpack:"last_used,omitempty"` // latest sign-in, unix ms; 0: never
}

type UserListReply struct {
	Users []UserInfo `msgpack:"users"`
}

// UserChange is the argument of OpUserDisable, OpUserEnable and
// OpUserRemove (admin only).
type UserChange struct {
	User string `msgpack:"user"`
}

// UserChangeReply: Changed is false when the user already was so (the
// revocation list is published again all the same).
type UserChangeReply struct {
	User    string `msgpack:"user"`
	Changed bool   `msgpack:"changed"`
}

// PasskeyList lists a user's passkeys: Grant.User's over "web to auth",
// User's over "admin to auth" (where Grant is ignored).
type PasskeyList struct {
	Grant Grant  `msgpack:"grant,omitempty"`
	User  string `msgpack:"user,omitempty"`
}

// Passkey is one registered passkey.
type Passkey struct {
	ID       []byte `msgpack:"id"`
	Name     string `msgpack:"name,omitempty"`
	Created  int64  `msgpack:"created"`             // unix ms
	LastUsed int64  `msgpack:"last_used,omitempty"` // unix ms, 0: never
	// Current: the grant of the call came from this passkey (web only).
	Current bool `msgpack:"current,omitempty"`
}

type PasskeyListReply struct {
	User     string    `msgpack:"user"`
	Passkeys []Passkey `msgpack:"passkeys"`
}

// PasskeyRevoke removes a passkey and revokes the grants it yielded. Over
// "web to auth" the passkey must be Grant.User's and removing the last one
// needs Last set (the user then cannot sign in until an admin enrolls them
// again); over "admin to auth" User names the owner and Grant is ignored.
type PasskeyRevoke struct {
	Grant Grant  `msgpack:"grant,omitempty"`
	User  string `msgpack:"user,omitempty"`
	ID    []byte `msgpack:"id"`
	Last  bool   `msgpack:"last,omitempty"`
}

type PasskeyRevokeReply struct {
	User      string `msgpack:"user"`
	Remaining int    `msgpack:"remaining"`
}

// PasskeyAdd makes a short-lived enrollment token for Grant.User, which the
// page spends at once with register-begin and register-finish. The reply
// is an EnrollReply.
type PasskeyAdd struct {
	Grant Grant `msgpack:"grant"`
}

// --- policy and shell -----------------------------------------------------

// HostMachine is the machine name of the host itself, as in machinectl.
const HostMachine = ".host"

// CreateShellSession asks policy for a login shell for unix account User on
// Machine. On success the reply frame carries exactly one fd: the pty master.
type CreateShellSession struct {
	Machine string   `msgpack:"machine"`
	User    string   `msgpack:"user"`
	Args    []string `msgpack:"args,omitempty"` // empty: the login shell
	Env     []string `msgpack:"env,omitempty"`  // KEY=VALUE; filtered by policy
	Grant   Grant    `msgpack:"grant"`
}

// CreateShellSessionReply: the session is already in ptystore (policy put
// it there over "policy to ptystore" before answering), Session as
// ptystore stored it and Limits as in PtyPutReply. The fd on the frame is
// the caller's to stream; there is nothing left to put.
type CreateShellSessionReply struct {
	Session SessionInfo `msgpack:"session"`
	Rule    string      `msgpack:"rule"` // the policy line that allowed it, for the audit trail
	Limits  Limits      `msgpack:"limits,omitempty"`
}

// SessionTicket is policy's MAC over a new session's info (id, owner,
// unix user, machine, created, pid), the identity of its fd as the kernel
// reports it (kind, device, pts number or socket inode) and Expires. The
// fd's identity is not carried: ptystore asks the kernel about the fd it
// receives. See package ticket.
type SessionTicket struct {
	Expires int64  `msgpack:"expires"` // unix milliseconds
	MAC     []byte `msgpack:"mac"`
}

// AllowedTargets asks policy which login shells the policy's allow rules
// offer Grant.User: a hint for the new-session form. It decides nothing;
// create-shell-session still does, rule by rule.
type AllowedTargets struct {
	Grant Grant `msgpack:"grant"`
}

// MaxArgs bounds the argv of a shell request (CreateShellSession.Args,
// OpenShell.Args), far above any sane use: policy refuses more before it
// looks at a rule, and the shell helper again before it builds an argv.
const MaxArgs = 64

// MaxTargets bounds AllowedTargetsReply.Targets, so a policy of thousands
// of rules cannot make a reply past a client's limit: 256 targets of
// 64-byte names encode to under 40 KiB.
const MaxTargets = 256

// Target is one (unix account, machine) an allow rule offers, as the rule
// has it: User or Machine may be "*" (any), and then Pattern is set. A
// rule's "=" comes back as the caller's own name, which it stands for.
type Target struct {
	User    string `msgpack:"user"`
	Machine string `msgpack:"machine"`
	Pattern bool   `msgpack:"pattern"`
}

// AllowedTargetsReply lists the targets in rule order, at most MaxTargets;
// Truncated says the policy offers more than are listed.
type AllowedTargetsReply struct {
	Targets   []Target `msgpack:"targets"`
	Truncated bool     `msgpack:"truncated,omitempty"`
}

// AuditScope asks policy which machines' sessions Grant.User may audit:
// watch live, read-only, and play recordings of, whoever owns them (the
// policy file's audit lines). ptystore asks it on every pty-audit-list
// and pty-audit-get; the frontend asks it to know whether to show the
// page's audit view, a hint only.
type AuditScope struct {
	Grant Grant `msgpack:"grant"`
}

// AuditScopeReply lists the machines, each once, in file order; ["*"] is
// every machine. Empty: the user may audit nothing. Rules are the audit
// lines that gave it, for the log.
type AuditScopeReply struct {
	Machines []string `msgpack:"machines"`
	Rules    []string `msgpack:"rules,omitempty"`
}

// Covers reports whether the scope takes in sessions on machine.
func (r AuditScopeReply) Covers(machine string) bool {
	for _, m := range r.Machines {
		if m == "*" || m == machine {
			return true
		}
	}
	return false
}

// OpenShell is policy's already-decided request to the shell helper.
// Requester is the signed-in sluice user, for the log only.
type OpenShell struct {
	Machine   string   `msgpack:"machine"`
	User      string   `msgpack:"user"`
	Args      []string `msgpack:"args,omitempty"`
	Env       []string `msgpack:"env,omitempty"`
	Requester string   `msgpack:"requester"`
	// Record, when set, is the rule's recording: the shell helper splices
	// the recording helper between the shell's pty and the one it returns.
	Record *RecordSpec `msgpack:"record,omitempty"`
}

// RecordSpec is what a policy rule says about recording a session.
// Input also records what is typed ("record input"); FailOpen lets the
// session go on, unrecorded, when recording fails (the default ends it).
type RecordSpec struct {
	Input    bool `msgpack:"input,omitempty"`
	FailOpen bool `msgpack:"fail_open,omitempty"`
}

// OpenShellReply comes with exactly one fd, the pty master.
type OpenShellReply struct {
	SessionID string `msgpack:"session_id"`
	PID       int32  `msgpack:"pid"` // leader pid as seen by the shell helper; 0 if unknown
}

// CheckSessions asks policy whether live sessions may go on: for each
// entry, whether the policy file as it is now lets User have a login shell
// as UnixUser on Machine. ptystore asks it when someone attaches (the
// owner's entry, and a read-write viewer's) and when the file changed (every
// session's owner). Grant, when set, is the grant of the one attaching:
// policy verifies it too (so whatever policy refuses grants for, it refuses
// attaches for), and answers bad-grant if it does not hold.
type CheckSessions struct {
	Grant    *Grant         `msgpack:"grant,omitempty"`
	Sessions []SessionCheck `msgpack:"sessions"`
}

// MaxCheckSessions bounds CheckSessions.Sessions: two per session held at
// ptystore's default limit of 1024 sessions.
const MaxCheckSessions = 2048

// SessionCheck is one question: may User (a sluice user) have a shell as
// UnixUser on Machine. ID is the caller's, echoed back.
type SessionCheck struct {
	ID       string `msgpack:"id"`
	User     string `msgpack:"user"`
	UnixUser string `msgpack:"unix_user"`
	Machine  string `msgpack:"machine"`
}

// What ptystore does with a live session the policy no longer allows
// (the policy file's on-revoke directive).
const (
	OnRevokeEnd    = "end"    // hang its shell up, as pty-drop does
	OnRevokeDetach = "detach" // keep the shell, refuse every attach until allowed again
)

// CheckSessionsReply answers entry i in Verdicts[i]. OnRevoke is the
// file's on-revoke directive.
type CheckSessionsReply struct {
	Verdicts []Verdict `msgpack:"verdicts"`
	OnRevoke string    `msgpack:"on_revoke"`
}

// Verdict is one answer. Rule is the deciding rule as the audit trail has
// it; Reason, on a refusal, is fit for the user.
type Verdict struct {
	ID     string `msgpack:"id"`
	Allow  bool   `msgpack:"allow"`
	Rule   string `msgpack:"rule,omitempty"`
	Reason string `msgpack:"reason,omitempty"`
	// Limits are the allowing rule's (its own, else the file's defaults);
	// on a refusal the file's defaults, which bound a session on-revoke
	// detach keeps.
	Limits Limits `msgpack:"limits,omitempty"`
}

// Limits bound a session's life, in milliseconds; 0 is no limit. The
// policy file sets them (docs/policy.md); ptystore enforces Detached and
// Max, the frontend Idle.
type Limits struct {
	Idle     int64 `msgpack:"idle,omitempty"`     // no input from any viewer this long: viewers are detached and must sign in again
	Detached int64 `msgpack:"detached,omitempty"` // no viewer this long: the session ends
	Max      int64 `msgpack:"max,omitempty"`      // this long after it was created: the session ends
}

// --- ptystore -------------------------------------------------------------

// Sharing modes of a session.
const (
	SharePrivate   = "private"
	ShareReadOnly  = "read-only"
	ShareReadWrite = "read-write"
)

// SessionInfo describes one live shell session.
type SessionInfo struct {
	ID       string `msgpack:"id"`
	Owner    string `msgpack:"owner"`     // sluice user who created it
	UnixUser string `msgpack:"unix_user"` // account the shell runs as
	Machine  string `msgpack:"machine"`
	Created  int64  `msgpack:"created"` // unix milliseconds
	Sharing  string `msgpack:"sharing"` // SharePrivate, ShareReadOnly, ShareReadWrite
	PID      int32  `msgpack:"pid,omitempty"`
}

// PtyPut hands ptystore a live pty master (one fd on the frame) to hold for
// Grant.User, who must equal Session.Owner. Only policy calls it (over
// "policy to ptystore", as part of create-shell-session); Ticket is the
// one policy signed for the fd: ptystore refuses a session whose info or
// fd it does not vouch for.
type PtyPut struct {
	Grant   Grant         `msgpack:"grant"`
	Session SessionInfo   `msgpack:"session"`
	Ticket  SessionTicket `msgpack:"ticket"`
	// Limits are the session's, from the rule policy allowed it by: the
	// put's caller is policy (the route admits no one else), so ptystore
	// takes them instead of asking policy back while policy's instance
	// waits on this very put (at policy's MaxConnections that call found
	// no instance and every create stalled for its whole deadline). Nil:
	// ptystore asks policy (check-sessions), as before.
	Limits *Limits `msgpack:"limits,omitempty"`
}

// PtyPutReply's Limits are the session's, as ptystore learned them from
// policy; the frontend enforces Limits.Idle.
type PtyPutReply struct {
	Session SessionInfo `msgpack:"session"`
	Limits  Limits      `msgpack:"limits,omitempty"`
}

// PtyGet asks for a dup of a held pty master. The caller must be the owner,
// or present a ShareToken for the session made by the owner.
type PtyGet struct {
	Grant      Grant  `msgpack:"grant"`
	ID         string `msgpack:"id"`
	ShareToken []byte `msgpack:"share_token,omitempty"`
}

// PtyGetReply comes with one fd. Mode is what the caller may do: "owner",
// ShareReadOnly or ShareReadWrite. The frontend enforces read-only. Epoch
// is the share epoch of the token the caller came with (0 for the owner):
// the frontend applies later share changes to the viewer by it.
type PtyGetReply struct {
	Session SessionInfo `msgpack:"session"`
	Mode    string      `msgpack:"mode"`
	Epoch   uint32      `msgpack:"epoch,omitempty"`
	Limits  Limits      `msgpack:"limits,omitempty"` // as in PtyPutReply
}

// ModeOwner is PtyGetReply.Mode for the session's owner.
const ModeOwner = "owner"

// ModeAudit is PtyGetReply.Mode for an auditor (pty-audit-get): read-only,
// and shown to everyone attached as an auditor.
const ModeAudit = "audit"

// PtyAuditList lists the live sessions Grant.User may audit, whoever owns
// them; the reply is a PtyListReply. PtyAuditGet is a read-only view of
// one of them: the reply is a PtyGetReply with Mode ModeAudit and one fd.
// ptystore asks policy (audit-scope) on each call; the frontend's word
// counts for nothing.
type PtyAuditList struct {
	Grant Grant `msgpack:"grant"`
}

type PtyAuditGet struct {
	Grant Grant  `msgpack:"grant"`
	ID    string `msgpack:"id"`
}

// PtyList lists the sessions Grant.User owns. Over "admin to ptystore" the
// grant is ignored and every session is listed.
type PtyList struct {
	Grant Grant `msgpack:"grant"`
}

type PtyListReply struct {
	Sessions []SessionInfo `msgpack:"sessions"`
}

// PtyDrop ends a session: ptystore has the hangup helper end the shell's
// whole process tree, then forgets the session and closes its fd. An error
// means the shell may still be running, and the session is still held.
type PtyDrop struct {
	Grant Grant  `msgpack:"grant"`
	ID    string `msgpack:"id"`
}

type PtyDropReply struct{}

// PtyShare sets a session's sharing mode and returns a token that lets other
// signed-in users PtyGet it in that mode. SharePrivate revokes earlier tokens.
type PtyShare struct {
	Grant Grant  `msgpack:"grant"`
	ID    string `msgpack:"id"`
	Mode  string `msgpack:"mode"`
}

// PtyShareReply's Epoch is the session's share epoch after the change
// (bumped by every change of mode); the frontend uses it to apply the
// change to viewers already attached.
type PtyShareReply struct {
	Token []byte `msgpack:"token,omitempty"`
	Epoch uint32 `msgpack:"epoch,omitempty"`
}

// PtyViewers is the frontend telling ptystore which sessions have a viewer,
// for the detached limit: Attached have one now (sent again at least every
// ViewerLease/3 while they do), Left just lost their last one. A session
// neither attached, got nor put for ViewerLease counts as detached since it
// last was. No grant: the route (the frontend's uid, from the kernel) is
// the whole authority, and a lie gains nothing the frontend lacks (see
// docs/threat-model.md).
type PtyViewers struct {
	Attached []string `msgpack:"attached,omitempty"`
	Left     []string `msgpack:"left,omitempty"`
}

// MaxPtyViewers bounds the IDs of one PtyViewers (ptystore's default
// session limit).
const MaxPtyViewers = 1024

// ViewerLeaseMs is how long a report that a session has a viewer holds.
const ViewerLeaseMs = 60_000

type PtyViewersReply struct {
	Unknown int `msgpack:"unknown,omitempty"` // IDs ptystore does not hold
	// Detached are the Attached IDs whose sessions the policy detached
	// (on-revoke detach): the frontend detaches their viewers. The
	// frontend reports every PolicyDetachPollMs while any session has a
	// viewer, so this is how fast a policy detach reaches open pages.
	Detached []string `msgpack:"detached,omitempty"`
}

// PolicyDetachPollMs is how often the frontend reports its attached
// sessions (msg.PtyViewers), and so the bound on how long a page streams
// a session after the policy detached it.
const PolicyDetachPollMs = 500

// PtyRecheck (admin only) has ptystore ask policy about every live session
// now, as it does when it sees the policy file change, and apply the
// answer. sluicectl policy apply sends it after installing a file.
type PtyRecheck struct{}

// PtyRecheckReply lists what the recheck did to each session it took
// access away from: Action is OnRevokeEnd or OnRevokeDetach, Err is set
// when ending failed (the session is then still held).
type PtyRecheckReply struct {
	Checked int              `msgpack:"checked"`
	Revoked []RevokedSession `msgpack:"revoked"`
}

// RevokedSession is one session a recheck took access away from.
type RevokedSession struct {
	Session SessionInfo `msgpack:"session"`
	Action  string      `msgpack:"action"`
	Reason  string      `msgpack:"reason,omitempty"`
	Err     string      `msgpack:"err,omitempty"`
}

// --- hangup -----------------------------------------------------------------

// HangupSession asks the hangup helper to end the session whose controlling
// terminal is the pty of the one fd on the frame (a pty master). It names
// no process: the helper asks the kernel which session that pty controls.
type HangupSession struct{}

// HangupSessionReply says what was done. SID 0: no session had the pty as its
// controlling terminal, so there was nothing to end.
type HangupSessionReply struct {
	SID     int32  `msgpack:"sid"`
	Hungup  int    `msgpack:"hungup"`           // processes sent SIGHUP
	Killed  int    `msgpack:"killed"`           // of those, still there after the grace: SIGKILL
	Cgroup  string `msgpack:"cgroup,omitempty"` // the session's own cgroup, killed and removed
	Elapsed int64  `msgpack:"elapsed_ms"`       // from the first signal to nothing left
}

// --- record -----------------------------------------------------------------

// RecordSession (shell to record) hands the recording helper a new
// session's two ends as the frame's two fds: the master of the pty the
// shell runs on (inner) and the slave of the pty whose master the caller
// returns to policy (outer). The helper writes the recording's header,
// answers, and then copies between the two, writing every byte to the
// recording before passing it on, until either side ends. Fields are the
// recording's header; none of them decides anything.
type RecordSession struct {
	Session   string `msgpack:"session"`   // shell's session id, 32 hex: the recording's id
	Requester string `msgpack:"requester"` // signed-in sluice user
	UnixUser  string `msgpack:"unix_user"`
	Machine   string `msgpack:"machine"`
	Term      string `msgpack:"term,omitempty"`
	Width     uint16 `msgpack:"width,omitempty"`
	Height    uint16 `msgpack:"height,omitempty"`
	Input     bool   `msgpack:"input,omitempty"`     // record "i" events
	FailOpen  bool   `msgpack:"fail_open,omitempty"` // a failed write stops recording, not the session
}

// RecordSessionReply names the recording.
type RecordSessionReply struct {
	ID string `msgpack:"id"`
}

// RecList filters recordings; zero fields do not filter. Since and Until
// (unix milliseconds) bound the start. Grant is required on "web to
// record" (an auditor's) and ignored on "admin to record".
type RecList struct {
	Grant   *Grant `msgpack:"grant,omitempty"`
	User    string `msgpack:"user,omitempty"` // requester or unix user
	Machine string `msgpack:"machine,omitempty"`
	Since   int64  `msgpack:"since,omitempty"`
	Until   int64  `msgpack:"until,omitempty"`
	Live    bool   `msgpack:"live,omitempty"` // only recordings still being written
}

// MaxRecList bounds RecListReply.Recordings (newest first).
const MaxRecList = 1000

// Recording describes one recording.
type Recording struct {
	ID        string `msgpack:"id"`
	Requester string `msgpack:"requester"`
	UnixUser  string `msgpack:"unix_user"`
	Machine   string `msgpack:"machine"`
	Started   int64  `msgpack:"started"`  // unix milliseconds
	Modified  int64  `msgpack:"modified"` // last write, unix milliseconds
	Size      int64  `msgpack:"size"`     // bytes
	Width     uint16 `msgpack:"width"`
	Height    uint16 `msgpack:"height"`
	Input     bool   `msgpack:"input,omitempty"` // has "i" events
	Live      bool   `msgpack:"live,omitempty"`  // a recorder is still writing it
}

type RecListReply struct {
	Recordings []Recording `msgpack:"recordings"`
	Truncated  bool        `msgpack:"truncated,omitempty"`
}

// RecOpen asks for one recording. The reply carries one fd: the .cast
// file opened read-only. A live recording keeps growing: read to the end,
// wait, read again; it is over when a line [T, "s", "end ..."] was read or
// rec-list no longer says live.
type RecOpen struct {
	Grant *Grant `msgpack:"grant,omitempty"`
	ID    string `msgpack:"id"`
}

type RecOpenReply struct {
	Recording Recording `msgpack:"recording"`
}

// RecVerify (admin only) checks a recording's seals with the key only the
// recording helper holds.
type RecVerify struct {
	ID string `msgpack:"id"`
}

// Verdicts of RecVerifyReply.State.
const (
	RecIntact  = "intact"  // every seal holds and the end seal is there
	RecLive    = "live"    // every seal so far holds; still being written
	RecCut     = "cut"     // every seal holds, but the recording stops before its end seal
	RecAltered = "altered" // a seal does not hold: bytes were changed
)

// RecVerifyReply: State is one of Rec*; Detail says where (the byte
// offset and time of the first bad seal, or of the last good one).
type RecVerifyReply struct {
	State    string  `msgpack:"state"`
	Detail   string  `msgpack:"detail"`
	Seals    int     `msgpack:"seals"`    // seals that hold
	Sealed   int64   `msgpack:"sealed"`   // bytes covered by the last seal that holds
	Size     int64   `msgpack:"size"`     // bytes in the file
	Duration float64 `msgpack:"duration"` // seconds, at the last seal that holds
}

// CheckAudit (record to policy) asks whether Grant's user may audit
// recordings, and of which machines. Policy verifies the grant as for
// create-shell-session (bad-grant otherwise) and answers from the file.
type CheckAudit struct {
	Grant Grant `msgpack:"grant"`
}

// CheckAuditReply: Machines is the grant's audit scope, as
// AuditScopeReply's (["*"]: every machine); Allow is whether it is not
// empty. The recording helper shows an auditor only the recordings of
// machines in it.
type CheckAuditReply struct {
	Allow    bool     `msgpack:"allow"`
	Reason   string   `msgpack:"reason,omitempty"` // fit for the user when not allowed
	Machines []string `msgpack:"machines,omitempty"`
	Rules    []string `msgpack:"rules,omitempty"` // the audit lines that gave it, for the log
}

// Covers reports whether the scope takes in recordings of machine.
func (r CheckAuditReply) Covers(machine string) bool {
	return r.Allow && AuditScopeReply{Machines: r.Machines}.Covers(machine)
}
