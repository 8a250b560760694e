// Command probe looks around from inside a sandbox and prints what it saw
// (see container.RunProbe). It is built static, because the sandboxes
// hold no loader or C library for it, and is carried in by the sandbox's
// init as an open file, never placed in the sandbox's root.
package main

import "sluice/tests/container"

func main() { container.RunProbe() }
