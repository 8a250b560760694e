// Package hangup ends a shell session the way a terminal hangup would,
// and then some: given a pty master, it asks the kernel which session has
// that pty as its controlling terminal (TIOCGSID) and which process group
// is in its foreground (TIOCGPGRP), sends SIGHUP and SIGCONT to every
// process of both, waits a grace period, SIGKILLs what is left, and where
// the session leader sits in a cgroup sluice made for that session alone,
// kills the cgroup too (cgroup.kill), so children that setsid'd away die
// with it.
//
// It is the only sluice component with the right to signal other users'
// processes. Its callers are ptystore and the recording helper, which
// hand it the master they hold; the helper takes no pid, session id or cgroup from anyone. What
// it refuses: an fd that is not a pty master, a session whose leader does
// not have that very pty as its controlling terminal, and any session
// holding pid 1, the helper's parent (the runner, or systemd) or a
// process of the helper's own session. See docs/threat-model.md.
//
// The socket, sluice-hangup (one process per connection): "ptystore to
// hangup" and "record to hangup", each taking one pty master. It holds
// nothing; its one privilege is CAP_KILL (root under the embedded runner).
//
// Shape, as every helper: cmd/sluice-hangup/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// hangup` prints it), then the helper's own files.
package hangup
