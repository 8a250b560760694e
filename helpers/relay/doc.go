// Package relay is the host end of the fleet's transport: sluice-relay,
// the forced command of the relay account's authorized_keys line, so the
// only thing the gateway's ssh key can do on a host. It reads one request
// frame from its stdin (the ssh channel), makes that call to the host's
// own policy or ptystore on the gateway protocols, writes the answer back
// and, for opening or attaching a session, streams the session's pty over
// the channel until either side ends.
//
// The relay holds no key and decides nothing: the host's helpers verify
// the host grant and apply the host's policy, and the kernel tells them
// the caller is the relay account.
//
// Not a socket: sshd runs sluice-relay as the relay account's forced
// command, one request per ssh connection, so it has no op table of its
// own. What it forwards is served, and listed, by the host's policy and
// ptystore as "gateway to policy" and "gateway to ptystore" (sluicectl audit
// --ops policy ptystore); relay-ping it answers itself.
package relay
