package main

import (
	"context"
	"fmt"

	"sluice/helpers/policy"
)

// runPolicy checks a policy file with the policy helper's own parser, so
// what passes here is exactly what the helper will load.
func runPolicy(ctx context.Context, g *globals, args []string) error {
	fs := flags("policy", "policy check [--json] FILE", g)
	asJSON := fs.Bool("json", false, "print the rules as JSON")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, rest); err != nil {
		return err
	}
	if verb != "check" || fs.NArg() != 1 {
		return usageErr("want: policy check FILE")
	}
	file := fs.Arg(0)
	p, err := policy.Load(file)
	if err != nil {
		return err
	}
	if *asJSON {
		type rule struct {
			Line    int      `json:"line"`
			Allow   bool     `json:"allow"`
			Who     string   `json:"who"`
			As      string   `json:"as"`
			On      string   `json:"on"`
			Command []string `json:"command,omitempty"`
			Text    string   `json:"text"`
		}
		out := struct {
			File   string              `json:"file"`
			Rules  []rule              `json:"rules"`
			Groups map[string][]string `json:"groups"`
		}{File: p.File, Rules: []rule{}, Groups: p.Groups}
		for _, r := range p.Rules {
			out.Rules = append(out.Rules, rule{r.Line, r.Allow, r.Who, r.As, r.On, r.Command, r.String()})
		}
		return printJSON(g.out, out)
	}
	for _, r := range p.Rules {
		fmt.Fprintln(g.out, r)
	}
	fmt.Fprintf(g.err, "%s: %d rules, %d groups, valid\n", file, len(p.Rules), len(p.Groups))
	return nil
}
