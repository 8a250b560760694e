package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"sluice/internal/grant"
	"sluice/suite"
)

func runManifest(ctx context.Context, g *globals, args []string) error {
	fs := flags("manifest", "manifest [--json] | manifest --write DIR", g)
	asJSON := fs.Bool("json", false, "print the manifest as JSON")
	write := fs.String("write", "", "hash the binaries in `DIR` and write DIR/build-ids.json (install time)")
	if err := parse(fs, g, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("no arguments")
	}
	if *write != "" {
		m, err := suite.BuildManifest(*write)
		if err != nil {
			return err
		}
		if len(m.Binaries) == 0 {
			return fmt.Errorf("no sluice binaries in %s", *write)
		}
		return m.Write(filepath.Join(*write, "build-ids.json"))
	}
	m, err := suite.Manifest()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(g.out, m)
	}
	fmt.Fprintf(g.out, "# %s\n", suite.ManifestPath())
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tPROTOCOL\tROLE\tBUILD ID")
	for _, e := range m.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Component, e.Protocol, e.Role, e.BuildID)
	}
	return tw.Flush()
}

func runKeygen(ctx context.Context, g *globals, args []string) error {
	fs := flags("keygen", "keygen [--unless-exists] FILE", g)
	unlessExists := fs.Bool("unless-exists", false, "do nothing when FILE exists (sluice-keys.service makes each key once)")
	if err := parse(fs, g, flagsFirst(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("want FILE")
	}
	if *unlessExists {
		if _, err := os.Lstat(fs.Arg(0)); err == nil {
			return nil
		}
	}
	if _, err := grant.WriteKeyFile(fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(g.err, "wrote a new 32-byte key to %s\n", fs.Arg(0))
	return nil
}
