package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"sluice/audit"
	"sluice/rpc/buildid"
	"sluice/suite"
)

func runAudit(ctx context.Context, g *globals, args []string) error {
	fs := flags("audit", "audit [--root DIR] [--prefix DIR] [--json] [--ops] [HELPER...]", g)
	root := fs.String("root", "/", "installation root (a DESTDIR)")
	prefix := fs.String("prefix", "/usr", "installation prefix")
	asJSON := fs.Bool("json", false, "print JSON")
	ops := fs.Bool("ops", false, "print only the helpers' op tables, from the code: per protocol each op, its argument and reply types with their fields, and the fds it takes and gives (no installation needed)")
	if err := parse(fs, g, args); err != nil {
		return err
	}
	if *ops {
		return printOps(g.out, fs.Args())
	}
	l := audit.LayoutFor(*root, *prefix)
	if *root == "/" {
		l.Root = ""
	}
	var man *buildid.Manifest
	var manErr error
	if os.Getenv("SLUICE_MANIFEST") != "" {
		man, manErr = suite.Manifest()
	} else {
		man, manErr = buildid.Load(filepath.Join(l.LibexecDir, "build-ids.json"))
	}
	reports, err := audit.InspectAll(ctx, l, man)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		var keep []audit.Report
		for _, r := range reports {
			if slices.Contains(fs.Args(), r.Component) {
				keep = append(keep, r)
			}
		}
		if len(keep) != fs.NArg() {
			return usageErr("unknown helper in %v (frontend, auth, policy, shell, ptystore)", fs.Args())
		}
		reports = keep
	}
	problems := 0
	for i := range reports {
		if manErr != nil {
			reports[i].Problems = append(reports[i].Problems, "no build manifest: "+manErr.Error())
		}
		problems += len(reports[i].Problems)
	}
	if *asJSON {
		if err := printJSON(g.out, reports); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printReport(g.out, r)
		}
		fmt.Fprintf(g.out, "%d helpers, %d problems\n", len(reports), problems)
	}
	if problems > 0 {
		return errSilent
	}
	return nil
}

func printReport(w io.Writer, r audit.Report) {
	row := func(k, v string) { fmt.Fprintf(w, "  %-10s %s\n", k, v) }
	more := func(v string) { fmt.Fprintf(w, "  %-10s %s\n", "", v) }
	fmt.Fprintln(w, r.Component)
	per := "Accept=no, one long-running process"
	if r.Accept {
		per = "Accept=yes, one process per connection"
	}
	row("socket", fmt.Sprintf("%s  (%s)", r.Socket, per))
	if r.Mode != "" || r.Group != "" {
		live := "not present"
		if r.Live != nil {
			live = fmt.Sprintf("%s %s:%s", r.Live.Mode, r.Live.Owner, r.Live.Group)
		}
		row("mode", fmt.Sprintf("%s root:%s  (now: %s)", r.Mode, r.Group, live))
	}
	groups := "-"
	if len(r.Groups) > 0 {
		groups = strings.Join(r.Groups, " ")
	}
	row("runs as", fmt.Sprintf("%s  supplementary groups: %s", r.User, groups))
	protos := make([]string, 0, len(r.CallerNames))
	for p := range r.CallerNames {
		protos = append(protos, p)
	}
	sort.Strings(protos)
	for i, p := range protos {
		line := fmt.Sprintf("%s: %s", p, r.CallerNames[p])
		if i == 0 {
			row("callers", line)
		} else {
			more(line)
		}
	}
	if r.Exposure != nil {
		row("exposure", fmt.Sprintf("%.1f (ceiling %.1f; systemd-analyze security --offline=true)", *r.Exposure, audit.Ceiling(r.Component)))
	} else {
		row("exposure", "unknown: "+r.ExposureErr)
	}
	if r.Profile != "" {
		row("apparmor", r.Profile)
		more(r.ProfileSum)
	}
	keys := make([]string, 0, len(r.BuildIDs))
	for k := range r.BuildIDs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		line := fmt.Sprintf("%-26s %s", k, r.BuildIDs[k])
		if i == 0 {
			row("build IDs", line)
		} else {
			more(line)
		}
	}
	printReportOps(w, r.Component)
	for _, p := range r.Problems {
		row("PROBLEM", p)
	}
	fmt.Fprintln(w)
}
