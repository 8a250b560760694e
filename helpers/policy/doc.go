// Package policy is the policy helper: it decides who may open which shell,
// from an admin-written policy file, and on "allow" asks the shell helper
// for the shell and hands the pty master on to the frontend. The file's
// grammar is in docs/policy.md.
//
// The socket, sluice-policy (one process per connection): "web to policy"
// from the frontend, "ptystore to policy" and "record to policy" from those
// helpers, and with --fleet-host "gateway to policy" from the relay account.
// It holds the grant key and reads the policy file and the revocation list;
// it is the one client of "policy to shell".
//
// Shape, as every helper: cmd/sluice-policy/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// policy` prints it), then the helper's own files.
package policy
