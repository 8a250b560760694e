package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"sluice/helpers/policy"
	"sluice/msg"
)

// runPolicy checks a policy file with the policy helper's own parser, so
// what passes here is exactly what the helper will load, and shows which
// live sessions it would take access away from; apply installs it.
func runPolicy(ctx context.Context, g *globals, args []string) error {
	fs := flags("policy", "policy check [--json] [--offline] FILE | policy apply [--json] [--to PATH] FILE", g)
	asJSON := fs.Bool("json", false, "print JSON")
	offline := fs.Bool("offline", false, "check: only parse the file; do not ask ptystore for the live sessions")
	to := fs.String("to", policy.DefaultFile, "apply: the policy file the helpers use")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, rest); err != nil {
		return err
	}
	if (verb != "check" && verb != "apply") || fs.NArg() != 1 {
		return usageErr("want: policy check FILE, or policy apply FILE")
	}
	file := fs.Arg(0)
	p, err := policy.Load(file)
	if err != nil {
		return err
	}
	if verb == "apply" {
		return applyPolicy(ctx, g, p, file, *to, *asJSON)
	}
	out := checkOutput{File: p.File, OnRevoke: p.OnRevoke, Limits: p.LimitsFor(nil), Rules: []ruleJSON{}, Groups: p.Groups, WouldRevoke: []revokedJSON{}}
	for _, r := range p.Rules {
		out.Rules = append(out.Rules, ruleJSON{r.Line, r.Allow, r.Who, r.As, r.On, r.Command, r.String()})
	}
	for _, a := range p.Audits {
		out.Audits = append(out.Audits, auditJSON{a.Line, a.Who, a.On, a.String()})
	}
	if !*offline {
		var rep msg.PtyListReply
		if _, err := request(ctx, g, msg.ProtoAdminToPtyStore, msg.OpPtyList, msg.PtyList{}, &rep, 0); err != nil {
			// The file is still checked; what it would do to live
			// sessions is not known, and the output says so.
			out.SessionsError = err.Error()
		} else {
			checked := len(rep.Sessions)
			out.SessionsChecked = &checked
			for _, s := range rep.Sessions {
				if d := p.SessionAllowed(s.Owner, s.UnixUser, s.Machine); !d.Allow {
					out.WouldRevoke = append(out.WouldRevoke, revokedJSON{s, p.OnRevoke, d.Reason, ""})
				}
			}
		}
	}
	if *asJSON {
		return printJSON(g.out, out)
	}
	switch {
	case out.SessionsChecked == nil:
		fmt.Fprintf(g.out, "live sessions not checked: %s\n", out.SessionsError)
	case len(out.WouldRevoke) == 0:
		fmt.Fprintf(g.out, "live sessions: %d, all still allowed\n", *out.SessionsChecked)
	default:
		fmt.Fprintf(g.out, "live sessions: %d; this file would %s %d:\n", *out.SessionsChecked, p.OnRevoke, len(out.WouldRevoke))
		printRevoked(g, out.WouldRevoke)
	}
	for _, r := range p.Rules {
		fmt.Fprintln(g.out, r)
	}
	for _, a := range p.Audits {
		fmt.Fprintln(g.out, a)
	}
	fmt.Fprintf(g.err, "%s: %d rules, %d groups, on-revoke %s, limits %s, valid\n", file, len(p.Rules), len(p.Groups), p.OnRevoke, p.LimitsText())
	return nil
}

type ruleJSON struct {
	Line    int      `json:"line"`
	Allow   bool     `json:"allow"`
	Who     string   `json:"who"`
	As      string   `json:"as"`
	On      string   `json:"on"`
	Command []string `json:"command,omitempty"`
	Text    string   `json:"text"`
}

type auditJSON struct {
	Line int    `json:"line"`
	Who  string `json:"who"`
	On   string `json:"on"`
	Text string `json:"text"`
}

type revokedJSON struct {
	Session msg.SessionInfo `json:"session"`
	Action  string          `json:"action"` // end or detach
	Reason  string          `json:"reason"`
	Error   string          `json:"error,omitempty"` // apply: ending it failed; it is still running
}

type checkOutput struct {
	File            string              `json:"file"`
	OnRevoke        string              `json:"on_revoke"`
	Limits          msg.Limits          `json:"limits"` // the file's, for rules that set none; milliseconds, 0 none
	Rules           []ruleJSON          `json:"rules"`
	Audits          []auditJSON         `json:"audits,omitempty"`
	Groups          map[string][]string `json:"groups"`
	SessionsChecked *int                `json:"sessions_checked"` // null: ptystore could not be asked
	SessionsError   string              `json:"sessions_error,omitempty"`
	WouldRevoke     []revokedJSON       `json:"would_revoke"`
}

func printRevoked(g *globals, rs []revokedJSON) {
	for _, r := range rs {
		s := r.Session
		line := fmt.Sprintf("  %s %s  owner %s  as %s on %s", r.Action, s.ID, s.Owner, s.UnixUser, s.Machine)
		if r.Error != "" {
			line += "  FAILED: " + r.Error
		}
		fmt.Fprintln(g.out, line)
	}
}

// applyPolicy installs p's file at to atomically (a temporary file in the
// same directory, synced, renamed over the old one), so the policy helper
// reads either the old file or the new one, never part of one; then has
// ptystore check every live session against it at once, rather than at
// its next poll of the file.
func applyPolicy(ctx context.Context, g *globals, p *policy.Policy, file, to string, asJSON bool) error {
	text, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	// What is installed is what was parsed: re-parse the bytes written.
	if _, err := policy.Parse(bytes.NewReader(text), file); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(to), ".policy-*")
	if err != nil {
		return fmt.Errorf("install %s: %w", to, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(text); err == nil {
		err = tmp.Chmod(0o644)
		if err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), to)
	}
	if err != nil {
		return fmt.Errorf("install %s: %w", to, err)
	}
	var rep msg.PtyRecheckReply
	_, rerr := request(ctx, g, msg.ProtoAdminToPtyStore, msg.OpPtyRecheck, msg.PtyRecheck{}, &rep, 0)
	out := struct {
		Installed string        `json:"installed"`
		Checked   int           `json:"sessions_checked"`
		Revoked   []revokedJSON `json:"revoked"`
		Error     string        `json:"error,omitempty"`
	}{Installed: to, Checked: rep.Checked, Revoked: []revokedJSON{}}
	failed := rerr != nil
	if rerr != nil {
		out.Error = rerr.Error()
	}
	for _, r := range rep.Revoked {
		out.Revoked = append(out.Revoked, revokedJSON{r.Session, r.Action, r.Reason, r.Err})
		failed = failed || r.Err != ""
	}
	if asJSON {
		if err := printJSON(g.out, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.out, "installed %s (%d rules, on-revoke %s)\n", to, len(p.Rules), p.OnRevoke)
		if rerr != nil {
			fmt.Fprintf(g.out, "live sessions not checked: %v (ptystore checks them when it next sees the file change)\n", rerr)
		} else {
			fmt.Fprintf(g.out, "live sessions: %d checked, %d no longer allowed\n", rep.Checked, len(rep.Revoked))
			printRevoked(g, out.Revoked)
		}
	}
	if failed {
		return errSilent
	}
	return nil
}
