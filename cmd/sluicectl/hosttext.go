package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// What a fleet host answers is the host's to choose: a compromised one
// picks its sessions' IDs, owners and its error texts. Printed raw they
// would reach the admin's terminal as escape sequences (retitling it,
// rewriting lines above, hiding rows) or, with a newline and tabs, as
// made-up rows under another host's name. So every field of a text table
// goes through shown: printable text as it is, anything else quoted.

// shown is s as printable text: s itself when every rune prints and is
// no tab, else s quoted in Go syntax (\x1b, \n, \u009b, ...).
func shown(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r == '\t' || !unicode.IsPrint(r) && r != ' ' }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// printSessions is the text table of sluicectl sessions.
func printSessions(w io.Writer, rows []hostSession) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tID\tOWNER\tUNIX USER\tMACHINE\tCREATED\tSHARING\tPID")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t(no list: %s)\n", shown(r.Host), shown(r.Error))
			continue
		}
		s := r.SessionInfo
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", shown(r.Host), shown(s.ID), shown(s.Owner), shown(s.UnixUser), shown(s.Machine),
			time.UnixMilli(s.Created).UTC().Format(time.RFC3339), shown(s.Sharing), s.PID)
	}
	return tw.Flush()
}
