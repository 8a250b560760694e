//go:build !amd64

package confine

// No table for this architecture yet: Apply still sets no_new_privs and
// Landlock and reports Seccomp=false, which the helper logs.
const nativeArch = 0

var killed, spawning, allowed []uintptr
