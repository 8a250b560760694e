package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"sluice/helpers/auth"
	"sluice/helpers/fleet"
	"sluice/helpers/hangup"
	"sluice/helpers/policy"
	"sluice/helpers/ptystore"
	"sluice/helpers/record"
	"sluice/helpers/shell"
	"sluice/internal/gateway"
	"sluice/internal/optable"
	"sluice/msg"
)

// opTables is every helper socket's op table, taken from the helper's own
// code: the handlers are bound to zero values and never run here, so
// what is printed is what the helper serves, by construction.
var opTables = map[string]func() []optable.Table{
	msg.Auth: (&auth.Service{}).Tables,
	msg.Policy: func() []optable.Table {
		return withGateway((&policy.Handler{}).Tables(), msg.ProtoWebToPolicy, msg.ProtoGatewayToPolicy, gateway.PolicyOps)
	},
	msg.Shell: (&shell.Handler{}).Tables,
	msg.PtyStore: func() []optable.Table {
		return withGateway((&ptystore.Handler{}).Tables(), msg.ProtoWebToPtyStore, msg.ProtoGatewayToPtyStore, gateway.PtyStoreOps)
	},
	msg.Hangup: (&hangup.Handler{}).Tables,
	msg.Record: (&record.Handler{}).Tables,
	msg.Fleet:  (&fleet.Fleet{}).Tables,
}

// withGateway adds the table a host in a fleet serves the relay (with
// --fleet-host): the web ops gateway lists, under a host grant.
func withGateway(tables []optable.Table, web, proto string, ops map[string]bool) []optable.Table {
	if t, ok := optable.Find(tables, web); ok {
		tables = append(tables, (&gateway.Adapter{Ops: ops}).Table(proto, t))
	}
	return tables
}

func opHelpers() []string {
	names := make([]string, 0, len(opTables))
	for n := range opTables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// printOps writes the op tables of the named helpers (all without names).
func printOps(w io.Writer, names []string) error {
	if len(names) == 0 {
		names = opHelpers()
	}
	for _, n := range names {
		if opTables[n] == nil {
			return usageErr("no op table for %q (helpers: %v)", n, opHelpers())
		}
	}
	for i, n := range names {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s: the ops its socket serves\n", n)
		if err := optable.Write(w, opTables[n]()); err != nil {
			return err
		}
	}
	return nil
}

// printReportOps appends a component's op tables to its audit report.
func printReportOps(w io.Writer, component string) {
	tables, ok := opTables[component]
	if !ok {
		return
	}
	fmt.Fprintf(w, "  ops (from the code; `sluicectl audit --ops %s` for argument and reply fields)\n", component)
	for _, t := range tables() {
		var ops []string
		for _, e := range t.Ops {
			s := e.Name
			switch {
			case e.Refused != "":
				s += " (refused)"
			case e.FDsIn > 0 || e.FDsOut > 0:
				s += fmt.Sprintf(" (fds %d in, %d out)", e.FDsIn, e.FDsOut)
			}
			ops = append(ops, s)
		}
		fmt.Fprintf(w, "  %-10s %s: %s\n", "", t.Protocol, strings.Join(ops, ", "))
	}
}
