package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sluice/internal/gateway"
	"sluice/internal/optable"
	"sluice/msg"
)

// opConstants reads msg's Op* constants from its source: a new op whose
// constant no table lists fails TestOpTables, whoever forgets which half.
func opConstants(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "..", "msg", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("msg sources: %v", err)
	}
	ops := map[string]string{} // value -> constant name
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Op") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, _ := strconv.Unquote(lit.Value)
					ops[v] = name.Name
				}
			}
		}
	}
	if len(ops) < 20 {
		t.Fatalf("only %d Op constants found in msg: the parse is wrong", len(ops))
	}
	return ops
}

// notServedByASocket are ops no helper socket serves: sluice-relay
// answers relay-ping itself, on the ssh channel.
var notServedByASocket = map[string]bool{msg.OpRelayPing: true}

// TestOpTables: `sluicectl audit --ops NAME` prints exactly the ops NAME's
// tables serve, per protocol; every table is a protocol msg says NAME
// serves, and every such protocol has a table; every op is an msg Op
// constant, and every Op constant is served somewhere.
func TestOpTables(t *testing.T) {
	consts := opConstants(t)
	served := map[string]bool{}
	for _, name := range opHelpers() {
		tables := opTables[name]()
		want := map[string]bool{}
		for _, p := range append(append([]msg.Protocol(nil), msg.Protocols...), msg.FleetProtocols...) {
			if p.Server == name {
				want[p.Name] = true
			}
		}
		got := map[string]bool{}
		var pairs []string
		for _, tb := range tables {
			if err := tb.Check(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if !want[tb.Protocol] {
				t.Errorf("%s: a table for %q, which msg does not say %s serves", name, tb.Protocol, name)
			}
			got[tb.Protocol] = true
			for _, e := range tb.Ops {
				if _, ok := consts[e.Name]; !ok {
					t.Errorf("%s: %s: op %q is no msg Op constant", name, tb.Protocol, e.Name)
				}
				if e.Refused == "" {
					served[e.Name] = true
				}
				pairs = append(pairs, tb.Protocol+" "+e.Name)
			}
		}
		for p := range want {
			if !got[p] {
				t.Errorf("%s: serves %q (msg) but has no table for it", name, p)
			}
		}

		var out, errb bytes.Buffer
		if code := run([]string{"audit", "--ops", name}, &out, &errb); code != 0 {
			t.Fatalf("audit --ops %s: exit %d: %s", name, code, errb.String())
		}
		printed := parseOps(out.String())
		sort.Strings(pairs)
		if strings.Join(printed, "\n") != strings.Join(pairs, "\n") {
			t.Errorf("audit --ops %s printed\n%s\nthe tables hold\n%s", name, strings.Join(printed, "\n"), strings.Join(pairs, "\n"))
		}
	}
	for v, c := range consts {
		if !served[v] && !notServedByASocket[v] {
			t.Errorf("msg.%s (%q) is served by no helper's table", c, v)
		}
	}
}

// parseOps reads "protocol op" pairs back from audit --ops's output.
func parseOps(out string) []string {
	var pairs []string
	proto := ""
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "protocol "); ok {
			if q, err := strconv.QuotedPrefix(rest); err == nil {
				proto, _ = strconv.Unquote(q)
			}
			continue
		}
		if strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && !strings.HasPrefix(line, "  (") {
			op, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			pairs = append(pairs, proto+" "+strings.TrimSuffix(op, ":"))
		}
	}
	sort.Strings(pairs)
	return pairs
}

func TestAuditOpsUnknownHelper(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"audit", "--ops", "frobnicator"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no op table") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

// The gateway tables are the web tables' ops that package gateway lists.
func TestGatewayTables(t *testing.T) {
	for _, c := range []struct {
		helper, proto string
		ops           map[string]bool
	}{{msg.Policy, msg.ProtoGatewayToPolicy, gateway.PolicyOps}, {msg.PtyStore, msg.ProtoGatewayToPtyStore, gateway.PtyStoreOps}} {
		tb, ok := optable.Find(opTables[c.helper](), c.proto)
		if !ok {
			t.Errorf("%s: no %q table", c.helper, c.proto)
			continue
		}
		if len(tb.Ops) != len(c.ops) {
			t.Errorf("%s: %d ops, gateway lists %d", c.proto, len(tb.Ops), len(c.ops))
		}
		for _, e := range tb.Ops {
			if _, ok := c.ops[e.Name]; !ok || e.Carries == nil || e.Args != reflect.TypeOf(msg.GatewayArgs{}) {
				t.Errorf("%s %s: listed %v, args %v carrying %v", c.proto, e.Name, ok, e.Args, e.Carries)
			}
		}
	}
}
