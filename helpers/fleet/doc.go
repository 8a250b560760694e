// Package fleet is the gateway's side of the fleet transport: the helper
// that alone holds the gateway's SSH client key and reaches each host's
// relay account through the host's own sshd (OpenSSH's ssh binary, host
// keys pinned in a known_hosts file this helper's directory holds). The
// frontend asks it per call; it never sees the key.
//
// The socket, sluice-fleet (gateway only): "web to fleet" from the frontend,
// "admin to fleet" from sluicectl. It holds the SSH client key and the
// pinned host keys; the host grants it carries are auth's, checked by the
// hosts.
//
// Shape, as every helper: cmd/sluice-fleet/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// fleet` prints it), then the helper's own files.
package fleet
