package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sluice/msg"
)

func castHeader(title string, n int) string {
	return fmt.Sprintf(`{"version": 2, "width": 80, "height": 24, "timestamp": %d, "title": %q, "env": {"TERM": "xterm-256color"}}`+"\n",
		1764800000+n*1000, title)
}

// TestDirRecordings: the stand-in serves an auditor only the recordings
// of machines policy's scope covers, nothing to anyone else, and no path
// outside its directory.
func TestDirRecordings(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"host1.cast":   castHeader("root@.host", 1) + `[0.5, "o", "hi\r\n"]` + "\n",
		"web1.cast":    castHeader("root@web1", 2) + `[0.5, "o", "web\r\n"]` + "\n",
		"notitle.cast": `{"version": 2, "width": 80, "height": 24}` + "\n",
		"v1.cast":      `{"version": 1, "title": "root@.host"}` + "\n",
		"other.txt":    castHeader("root@.host", 3),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "outside.cast"), []byte(castHeader("root@.host", 4)), 0o644); err != nil {
		t.Fatal(err)
	}
	scopes := map[string][]string{"carol": {"*"}, "dave": {"web1"}, "alice": {}}
	d := &DirRecordings{Dir: dir, Scope: func(_ context.Context, g msg.Grant) (msg.AuditScopeReply, error) {
		return msg.AuditScopeReply{Machines: scopes[g.User]}, nil
	}}
	ctx := context.Background()
	for _, tc := range []struct {
		user string
		want []string
	}{{"carol", []string{"web1", "host1"}}, {"dave", []string{"web1"}}} {
		list, err := d.List(ctx, msg.Grant{User: tc.user})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range list {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%s lists %v, want %v (newest first)", tc.user, ids, tc.want)
		}
	}
	if list, err := d.List(ctx, msg.Grant{User: "alice"}); !errors.As(err, new(errNotAuditor)) {
		t.Errorf("alice, no auditor, lists %v %v", list, err)
	}
	if b, err := d.Read(ctx, msg.Grant{User: "carol"}, "host1"); err != nil || !strings.Contains(string(b), "hi\\r\\n") {
		t.Errorf("carol reads host1: %q %v", b, err)
	}
	for _, tc := range []struct{ user, id string }{
		{"dave", "host1"},          // out of scope reads as absent
		{"carol", "../outside"},    // no path out of the directory
		{"carol", "notitle"},       // no machine to decide by
		{"carol", "v1"},            // not asciicast v2
		{"carol", ".hidden"},       //
		{"carol", "missing"},       //
		{"carol", "host1\x00.txt"}, //
	} {
		if b, err := d.Read(ctx, msg.Grant{User: tc.user}, tc.id); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s reads %q: %q %v, want not found", tc.user, tc.id, b, err)
		}
	}
	if _, err := d.Read(ctx, msg.Grant{User: "alice"}, "host1"); !errors.As(err, new(errNotAuditor)) {
		t.Errorf("alice reads: %v", err)
	}
}

// TestHelperRecordings: a recording handed out as an open file is read
// whole, up to the limit; a larger one is refused, not cut.
func TestHelperRecordings(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.cast")
	big := filepath.Join(dir, "big.cast")
	os.WriteFile(small, []byte(castHeader("root@.host", 1)+`[0.1, "o", "x"]`+"\n"+`[0.2, "o", "partial`), 0o644)
	if err := os.WriteFile(big, make([]byte, MaxRecordingToPage+1), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &HelperRecordings{
		ListFunc: func(context.Context, msg.Grant) ([]RecordingInfo, error) { return nil, nil },
		OpenFunc: func(_ context.Context, _ msg.Grant, id string) (*os.File, error) {
			return os.Open(filepath.Join(dir, id+".cast"))
		},
	}
	b, err := h.Read(context.Background(), msg.Grant{}, "small")
	if err != nil || !strings.HasSuffix(string(b), `"partial`) {
		t.Errorf("small: %q %v", b, err)
	}
	if _, err := h.Read(context.Background(), msg.Grant{}, "big"); !errors.Is(err, errTooLarge) {
		t.Errorf("big: %v, want errTooLarge", err)
	}
	if _, err := h.Read(context.Background(), msg.Grant{}, "absent"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent: %v", err)
	}
}
