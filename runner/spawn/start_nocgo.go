//go:build !cgo

package spawn

import "errors"

// Start needs cgo: see the package comment for why the fork is in C.
func Start(a *Attr) (*Process, error) {
	return nil, errors.New("spawn: built without cgo; the runner needs CGO_ENABLED=1")
}
