package shell

import (
	"fmt"
	"log/slog"
	"os"
)

// Backend names for --backend.
const (
	BackendAuto     = "auto"
	BackendMachined = "machined"
	BackendEmbedded = "embedded"
)

// BootedMarker is what sd_booted(3) checks: it exists when systemd is the
// init system, and only then can machined be there to call.
var BootedMarker = "/run/systemd/system"

// Resolve turns "auto" into a concrete backend name: machined on a host
// booted with systemd, embedded elsewhere (containers without systemd,
// CI, "make run"). The choice does not depend on whether machined has
// already been started: it is bus-activated, so its runtime directory may
// not exist yet on a host where the first call would start it.
func Resolve(kind string) (string, error) {
	switch kind {
	case BackendMachined, BackendEmbedded:
		return kind, nil
	case BackendAuto, "":
		if st, err := os.Stat(BootedMarker); err == nil && st.IsDir() {
			return BackendMachined, nil
		}
		return BackendEmbedded, nil
	}
	return "", fmt.Errorf("shell: unknown backend %q (want %s, %s or %s)", kind, BackendAuto, BackendMachined, BackendEmbedded)
}

// NewBackend builds the named backend ("auto" resolved first).
func NewBackend(kind, busAddress string, log *slog.Logger) (Backend, string, error) {
	kind, err := Resolve(kind)
	if err != nil {
		return nil, "", err
	}
	if kind == BackendMachined {
		return &Machined{Address: busAddress}, kind, nil
	}
	return &Embedded{Log: log}, kind, nil
}
