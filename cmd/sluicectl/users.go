package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"sluice/msg"
	"sluice/rpc"
)

// exitNotFound is the status when the user or passkey named does not exist.
const exitNotFound = 3

// errNotFound marks a not-found answer (exit 3).
type errNotFound struct{ error }

// notFound turns a helper's not-found answer into errNotFound.
func notFound(err error) error {
	if err != nil && rpc.CodeOf(err) == msg.CodeNotFound {
		return errNotFound{err}
	}
	return err
}

func runUsers(ctx context.Context, g *globals, args []string) error {
	fs := flags("users", "users [list] [--json] | users disable|enable|remove USER [--end-sessions] [--json]", g)
	asJSON := fs.Bool("json", false, "print JSON")
	endSessions := fs.Bool("end-sessions", false, "disable, remove: also end the user's live sessions (default: keep them; the user cannot reach them while access is revoked)")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, flagsFirst(rest)); err != nil {
		return err
	}
	if verb == "" {
		verb = "list"
	}
	switch verb {
	case "list":
		if fs.NArg() > 0 {
			return usageErr("list takes no arguments")
		}
		var rep msg.UserListReply
		if _, err := request(ctx, g, msg.ProtoAdminToAuth, msg.OpUserList, msg.UserList{}, &rep, 0); err != nil {
			return err
		}
		if rep.Users == nil {
			rep.Users = []msg.UserInfo{}
		}
		if *asJSON {
			return printJSON(g.out, rep.Users)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tSTATE\tPASSKEYS\tCREATED\tLAST SIGN-IN")
		for _, u := range rep.Users {
			state := "enabled"
			if u.Disabled {
				state = "disabled"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", u.Name, state, u.Passkeys, when(u.Created), when(u.LastUsed))
		}
		return tw.Flush()
	case "disable", "enable", "remove":
		if fs.NArg() != 1 {
			return usageErr("want: users %s USER", verb)
		}
		if *endSessions && verb == "enable" {
			return usageErr("--end-sessions goes with disable and remove")
		}
		user := fs.Arg(0)
		op := map[string]string{"disable": msg.OpUserDisable, "enable": msg.OpUserEnable, "remove": msg.OpUserRemove}[verb]
		var rep msg.UserChangeReply
		if _, err := request(ctx, g, msg.ProtoAdminToAuth, op, msg.UserChange{User: user}, &rep, 0); err != nil {
			return notFound(err)
		}
		out := map[string]any{"user": rep.User, "action": verb, "changed": rep.Changed}
		if verb == "remove" {
			out["changed"] = true
		}
		var endErr error
		if *endSessions {
			ended, err := endSessionsOf(ctx, g, user)
			out["ended_sessions"] = ended
			endErr = err
		}
		if *asJSON {
			if err := printJSON(g.out, out); err != nil {
				return err
			}
		} else {
			past := map[string]string{"disable": "disabled", "enable": "enabled", "remove": "removed"}[verb]
			if !rep.Changed && verb != "remove" {
				fmt.Fprintf(g.out, "%s was already %s\n", user, past)
			} else {
				fmt.Fprintf(g.out, "%s %s\n", past, user)
			}
			if ended, ok := out["ended_sessions"].([]string); ok {
				fmt.Fprintf(g.out, "ended %d session(s): %s\n", len(ended), strings.Join(ended, " "))
			}
		}
		return endErr
	}
	return usageErr("unknown users verb \"%s\" (list, disable, enable, remove)", verb)
}

func runPasskeys(ctx context.Context, g *globals, args []string) error {
	fs := flags("passkeys", "passkeys list USER [--json] | passkeys revoke USER ID [--end-sessions] [--json]", g)
	asJSON := fs.Bool("json", false, "print JSON")
	endSessions := fs.Bool("end-sessions", false, "revoke: also end the user's live sessions")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, flagsFirst(rest)); err != nil {
		return err
	}
	switch verb {
	case "list":
		if fs.NArg() != 1 {
			return usageErr("want: passkeys list USER")
		}
		var rep msg.PasskeyListReply
		if _, err := request(ctx, g, msg.ProtoAdminToAuth, msg.OpPasskeyList, msg.PasskeyList{User: fs.Arg(0)}, &rep, 0); err != nil {
			return notFound(err)
		}
		type row struct {
			ID       string `json:"id"`
			Name     string `json:"name"`
			Created  int64  `json:"created"`
			LastUsed int64  `json:"last_used"`
		}
		rows := []row{}
		for _, p := range rep.Passkeys {
			rows = append(rows, row{hex.EncodeToString(p.ID), p.Name, p.Created, p.LastUsed})
		}
		if *asJSON {
			return printJSON(g.out, map[string]any{"user": rep.User, "passkeys": rows})
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED\tLAST USED")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Name, when(r.Created), when(r.LastUsed))
		}
		return tw.Flush()
	case "revoke":
		if fs.NArg() != 2 {
			return usageErr("want: passkeys revoke USER ID (ID in hex, as passkeys list prints it)")
		}
		user := fs.Arg(0)
		id, err := hex.DecodeString(fs.Arg(1))
		if err != nil || len(id) == 0 {
			return usageErr("passkey ID \"%s\" is not hex", fs.Arg(1))
		}
		var rep msg.PasskeyRevokeReply
		if _, err := request(ctx, g, msg.ProtoAdminToAuth, msg.OpPasskeyRevoke, msg.PasskeyRevoke{User: user, ID: id}, &rep, 0); err != nil {
			return notFound(err)
		}
		out := map[string]any{"user": rep.User, "revoked": hex.EncodeToString(id), "remaining": rep.Remaining}
		var endErr error
		if *endSessions {
			ended, err := endSessionsOf(ctx, g, user)
			out["ended_sessions"] = ended
			endErr = err
		}
		if *asJSON {
			if err := printJSON(g.out, out); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(g.out, "revoked passkey %x of %s (%d left)\n", id, rep.User, rep.Remaining)
			if ended, ok := out["ended_sessions"].([]string); ok {
				fmt.Fprintf(g.out, "ended %d session(s): %s\n", len(ended), strings.Join(ended, " "))
			}
		}
		return endErr
	case "":
		return usageErr("want: passkeys list USER | passkeys revoke USER ID")
	}
	return usageErr("unknown passkeys verb \"%s\" (list, revoke)", verb)
}

// endSessionsOf is the decision point "end or keep" of a revocation: it
// ends every live session user owns through ptystore's admin end path
// (pty-drop, which hangs up the shell). Sessions whose end failed are
// reported, not hidden.
func endSessionsOf(ctx context.Context, g *globals, user string) ([]string, error) {
	var rep msg.PtyListReply
	if _, err := request(ctx, g, msg.ProtoAdminToPtyStore, msg.OpPtyList, msg.PtyList{}, &rep, 0); err != nil {
		return nil, fmt.Errorf("access revoked, but the sessions could not be listed to end them: %w", err)
	}
	ended := []string{}
	var errs []error
	for _, s := range rep.Sessions {
		if s.Owner != user {
			continue
		}
		if _, err := request(ctx, g, msg.ProtoAdminToPtyStore, msg.OpPtyDrop, msg.PtyDrop{ID: s.ID}, &msg.PtyDropReply{}, 0); err != nil {
			errs = append(errs, fmt.Errorf("session %s: %w", s.ID, err))
			continue
		}
		ended = append(ended, s.ID)
	}
	if len(errs) > 0 {
		return ended, fmt.Errorf("access revoked, but not every session ended: %w", errors.Join(errs...))
	}
	return ended, nil
}

// flagsFirst moves flags before the arguments ("passkeys list alice
// --json"), which package flag wants first; "--" ends the flags as usual.
// Only for commands whose flags all are booleans.
func flagsFirst(args []string) []string {
	var fl, pos []string
	for i, a := range args {
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			fl = append(fl, a)
		} else {
			pos = append(pos, a)
		}
	}
	return append(fl, pos...)
}

func when(ms int64) string {
	if ms == 0 {
		return "never"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// isFormat: the Unicode format characters that reorder what a terminal
// shows (bidi overrides and isolates, marks, BOM), so a name cannot
// disguise what follows it.
func isFormat(r rune) bool {
	return r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0xfeff
}
