package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestEscaper(t *testing.T) {
	cases := []struct {
		name string
		in   []string // written one by one
		want string
	}{
		{"plain text, tabs and newlines kept", []string{"ID\tOWNER\nab\tcd\n"}, "ID\tOWNER\nab\tcd\n"},
		{"UTF-8 kept", []string{"grüße ✓"}, "grüße ✓"},
		{"title (OSC 0)", []string{"root\x1b]0;pwned\x07"}, `root\u001b]0;pwned\u0007`},
		{"clear screen", []string{"\x1b[2J"}, `\u001b[2J`},
		{"OSC 52 clipboard", []string{"\x1b]52;c;cm0=\x07"}, `\u001b]52;c;cm0=\u0007`},
		{"carriage return", []string{"ok\rfake"}, `ok\u000dfake`},
		{"DEL", []string{"a\x7fb"}, `a\u007fb`},
		{"C1 CSI as UTF-8", []string{"a\u009b2J"}, `a\u009b2J`},
		{"invalid UTF-8", []string{"a\xffb\xc3"}, `a\xffb`}, // the last byte is held: see Flush
		{"a rune split across writes", []string{"gr\xc3", "\xbc\xc3\x9fe"}, "grüße"},
	}
	for _, c := range cases {
		var b strings.Builder
		e := newEscaper(&b)
		for _, s := range c.in {
			if n, err := e.Write([]byte(s)); err != nil || n != len(s) {
				t.Fatalf("%s: Write = %d, %v", c.name, n, err)
			}
		}
		if b.String() != c.want {
			t.Errorf("%s: %q, want %q", c.name, b.String(), c.want)
		}
	}
	var b strings.Builder
	e := newEscaper(&b)
	e.Write([]byte("x\xc3"))
	e.Flush()
	if b.String() != `x\xc3` {
		t.Errorf("Flush of a held byte: %q", b.String())
	}
}

// TestRunEscapes: what sluicectl prints goes through the escaper, errors
// included (here one that carries a path an attacker could name).
func TestRunEscapes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "\x1b]0;pwned\x07", "grant.key")
	var out, errb strings.Builder
	if code := run([]string{"keygen", path}, &out, &errb); code != 1 {
		t.Fatalf("keygen into a missing directory: exit %d", code)
	}
	if strings.ContainsAny(errb.String(), "\x1b\x07") || !strings.Contains(errb.String(), `\u001b]0;pwned\u0007`) {
		t.Fatalf("error printed as %q", errb.String())
	}
}
