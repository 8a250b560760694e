//go:build !(cgo && linux)

package login

import (
	"fmt"
	"log/slog"
)

// Serve needs PAM, which needs cgo: sluice-login built without it only
// says so, and the shell helper reports that as the reason.
func Serve(log *slog.Logger) int {
	fmt.Println("error sluice-login was built without cgo, so without PAM: rebuild it with CGO_ENABLED=1")
	return 1
}
