// Package ptystore holds live pty master fds so shell sessions outlive the
// frontend and ptystore's own restarts. Every fd it holds is also in its
// service's fd store (systemd or the embedded runner), named with the
// session's metadata, and is adopted back from the activation fds on start.
// A watcher drops sessions whose shell has gone (POLLHUP on the master).
//
// The socket, sluice-ptystore (one long-running process): "web to ptystore"
// from the frontend, "admin to ptystore" from sluicectl, and with
// --fleet-host "gateway to ptystore" from the relay account. It holds the pty
// masters, the grant key (share tokens are keyed from it) and reads the
// revocation list; it asks policy whether sessions may go on and hands
// masters to the hangup helper to end them.
//
// Shape, as every helper: cmd/sluice-ptystore/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// ptystore` prints it), then the helper's own files.
package ptystore
