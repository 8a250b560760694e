//go:build cgo

package confine

// cgoBuild: syscall.AllThreadsSyscall refuses in a cgo binary, so Apply
// does not build a Landlock ruleset it could not enforce on every thread.
const cgoBuild = true
