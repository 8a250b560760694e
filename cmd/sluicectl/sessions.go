package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"sluice/msg"
)

func runSessions(ctx context.Context, g *globals, args []string) error {
	fs := flags("sessions", "sessions [list] [--json] | sessions end ID", g)
	asJSON := fs.Bool("json", false, "print JSON")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, rest); err != nil {
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
		var rep msg.PtyListReply
		if _, err := request(ctx, g, "admin to ptystore", msg.OpPtyList, msg.PtyList{}, &rep, 0); err != nil {
			return err
		}
		if *asJSON {
			if rep.Sessions == nil {
				rep.Sessions = []msg.SessionInfo{}
			}
			return printJSON(g.out, rep.Sessions)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tOWNER\tUNIX USER\tMACHINE\tCREATED\tSHARING\tPID")
		for _, s := range rep.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.ID, s.Owner, s.UnixUser, s.Machine,
				time.UnixMilli(s.Created).UTC().Format(time.RFC3339), s.Sharing, s.PID)
		}
		return tw.Flush()
	case "end":
		if fs.NArg() != 1 {
			return usageErr("want: sessions end ID")
		}
		id := fs.Arg(0)
		var rep msg.PtyDropReply
		if _, err := request(ctx, g, "admin to ptystore", msg.OpPtyDrop, msg.PtyDrop{ID: id}, &rep, 0); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(g.out, map[string]any{"ended": id})
		}
		fmt.Fprintf(g.out, "ended %s\n", id)
		return nil
	}
	return usageErr("unknown sessions verb %q (list, end)", verb)
}
