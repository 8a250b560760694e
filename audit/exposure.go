package audit

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

var overallRe = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+\.[0-9]+)`)

// Exposure runs `systemd-analyze security --offline=true` on a unit file
// and returns its overall exposure score and the full table it printed.
// Offline mode judges the file as written, so it works without systemd
// running and on files that are not installed.
func Exposure(ctx context.Context, unitPath string) (float64, string, error) {
	cmd := exec.CommandContext(ctx, "systemd-analyze", "security", "--offline=true", "--no-pager", unitPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(cmd.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=")
	err := cmd.Run()
	m := overallRe.FindSubmatch(out.Bytes())
	if m == nil {
		if err == nil {
			err = fmt.Errorf("no overall exposure line")
		}
		return 0, out.String(), fmt.Errorf("audit: systemd-analyze security %s: %w: %s", unitPath, err, bytes.TrimSpace(out.Bytes()))
	}
	score, perr := strconv.ParseFloat(string(m[2]), 64)
	if perr != nil {
		return 0, out.String(), fmt.Errorf("audit: exposure of %s: %w", unitPath, perr)
	}
	// A score above --threshold (default 100) makes the exit status
	// non-zero; the score is what the caller judges, so that is not an error.
	return score, out.String(), nil
}
