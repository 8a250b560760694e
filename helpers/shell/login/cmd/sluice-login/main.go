// Command sluice-login makes a login of a shell the shell helper's
// embedded backend starts: PAM account and session phases, utmp/wtmp, the
// tty handed to the user and back. It is started by sluice-shell on each
// new pty, never by hand; see package sluice/helpers/shell/login.
package main

import (
	"os"
	"runtime"

	"sluice/helpers/shell/login"
	"sluice/internal/helper"
)

// PAM modules keep per-thread state; the shell is forked from the thread
// they ran on.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(login.Serve(helper.Logger("login")))
}
