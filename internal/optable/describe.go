package optable

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Check reports a table that cannot be served as written: no protocol, an
// op listed twice, a negative fd count.
func (t *Table) Check() error {
	if t.Protocol == "" {
		return fmt.Errorf("optable: a table without a protocol")
	}
	seen := map[string]bool{}
	for _, e := range t.Ops {
		if e.Name == "" || e.serve == nil {
			return fmt.Errorf("optable: %s: an entry without a name or handler", t.Protocol)
		}
		if seen[e.Name] {
			return fmt.Errorf("optable: %s: op %s listed twice", t.Protocol, e.Name)
		}
		seen[e.Name] = true
		if e.FDsIn < 0 || e.FDsOut < 0 {
			return fmt.Errorf("optable: %s: %s: negative fd count", t.Protocol, e.Name)
		}
	}
	return nil
}

// Fields lists a struct type's msgpack fields as "name type", in order;
// nil for None and for a type that is not a struct.
func Fields(t reflect.Type) []string {
	if t == nil || t == noneType {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s := name + " " + f.Type.String()
		if strings.Contains(opts, "omitempty") {
			s += " (optional)"
		}
		out = append(out, s)
	}
	return out
}

func typeName(t reflect.Type) string {
	if t == nil || t == noneType {
		return "none"
	}
	return t.String()
}

// Write prints the tables the way `sluicectl audit NAME` shows them: per
// protocol, each op with its argument type and fields, its reply type and
// fields, and the fds it takes and gives.
func Write(w io.Writer, tables []Table) error {
	var b strings.Builder
	for i, t := range tables {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "protocol %q: ops %d, at most %d fds in\n", t.Protocol, len(t.Ops), t.MaxFDs())
		if t.Note != "" {
			fmt.Fprintf(&b, "  (%s)\n", t.Note)
		}
		if t.Guard != nil {
			b.WriteString("  (every call first passes the table's guard: the helper checks the caller before any op)\n")
		}
		for _, e := range t.Ops {
			if e.Refused != "" {
				fmt.Fprintf(&b, "  %s: refused (forbidden): %s\n", e.Name, e.Refused)
				continue
			}
			fmt.Fprintf(&b, "  %s  fds in %d, out %d\n", e.Name, e.FDsIn, e.FDsOut)
			writeType(&b, "args ", e.Args)
			if e.Carries != nil {
				writeType(&b, "  carrying", e.Carries)
			}
			writeType(&b, "reply", e.Reply)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeType(b *strings.Builder, what string, t reflect.Type) {
	fmt.Fprintf(b, "    %s %s", what, typeName(t))
	if fs := Fields(t); len(fs) > 0 {
		fmt.Fprintf(b, " {%s}", strings.Join(fs, ", "))
	}
	b.WriteByte('\n')
}
