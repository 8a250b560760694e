// Package rpc is sluice's one-call-per-connection protocol over a UNIX
// stream socket. A call is one exchange, then the server closes:
//
//	client: INTENT "\n" BUILDID "\n"     intent: "sluice 2026-11-24 v1 web to policy client"
//	        len32 REQUEST                request frame: msgpack, at most 64 KiB (Server.MaxFrame)
//	server: INTENT "\n" BUILDID "\n"     "... web to policy server", its own build ID
//	        len32 ERROR                  error frame: "" on success, else "code: text" (at most 4 KiB)
//	        len32 PAYLOAD                payload frame, on success only: msgpack, at most 1 MiB (Client.MaxReply)
//
// len32 is a big-endian uint32; a length above the limit is refused before
// any body is buffered. The intent (printable ASCII, at most 256 bytes)
// names the protocol and the side (package msg lists them); the build ID is
// 64 lowercase hex digits, BLAKE3 of the executable keyed by that intent
// (package rpc/buildid). Each side checks the other's pair against the one
// it expects and hangs up otherwise (ErrHandshake); a server at its
// connection cap answers the line "sluice busy" instead (ErrBusy).
//
// Who vouches for what: the kernel, and only the kernel, says who the
// caller is. The listening socket has SO_PASSCRED set before it accepts
// (Listen), so every read carries SCM_CREDENTIALS; the server requires them
// on every read, equal to SO_PEERCRED of the connection (a connected fd
// passed to another process is refused, ErrCredentials), and checks the
// route's Allow against that uid, gid and, when needed, SO_PEERGROUPS: a
// caller it does not allow gets "forbidden". The build IDs only tell
// binaries apart; they are public and prove nothing about who is calling.
// What a request says (a user, a grant) is the handler's to verify.
//
// Fds ride as SCM_RIGHTS: the client's on the request bytes, at most the
// route's MaxFDs (more: "bad-request", all closed); the server's on the
// reply (Reply.FDs), at most Client.MaxFDs. Deadlines: the whole call,
// handshake to answer, has 5 s by default (Server.Timeout, Client.Timeout),
// and the handler's context ends with it. Error codes: CodeBadRequest,
// CodeForbidden and CodeInternal here (a handler error that is not an
// *Error is sent as "internal", its text only logged), the helpers' own in
// package msg. docs/protocol.md has the whole of it.
package rpc
