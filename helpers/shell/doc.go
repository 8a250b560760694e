// Package shell is the shell helper: the only component that holds the
// privilege of opening login shells. It serves "policy to shell": the
// policy helper, having already decided, asks for a shell for unix account
// U on machine M, and gets back the pty master (for a recorded session,
// the recorder's session socket instead) and a session id. Opening
// is done by a Backend: machined over D-Bus in production, or an embedded
// pty-and-fork backend where there is no machined.
//
// The socket, sluice-shell (one process per connection): "policy to shell" from the policy helper only.
// It holds nothing between calls; its privilege is opening shells as any
// account (machined, or its own pty and fork, with sluice-login from package
// login beside it), and it hands recorded sessions to the recording helper.
//
// Shape, as every helper: cmd/sluice-shell/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// shell` prints it), then the helper's own files.
package shell
