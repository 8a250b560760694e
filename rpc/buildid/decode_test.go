package buildid

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sample is a manifest of a suite's shape: every field set, numbers at
// their extremes.
func sample() *Manifest {
	m := &Manifest{Version: 1}
	for i, c := range []string{"frontend", "auth", "policy", "shell", "ptystore"} {
		m.Binaries = append(m.Binaries, Binary{Component: c, File: "sluice-" + c, Identity: Identity{
			Dev: 65024, Ino: uint64(9999893 + i), Size: 7930018, MtimeNs: 1796419904624315444, CtimeNs: -1}})
		for _, role := range []string{"client", "server"} {
			m.Entries = append(m.Entries, Entry{Component: c, Protocol: "web to " + c, Role: role,
				Intent: "sluice web to " + c + " " + role, BuildID: strings.Repeat("ab", 32)})
		}
	}
	m.Binaries[0].Identity.Dev = 1<<64 - 1
	return m
}

// TestLoadFast: what Write writes, the fast decoder reads alone, to the
// same Manifest encoding/json makes of it.
func TestLoadFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build-ids.json")
	want := sample()
	if err := want.Write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := decodeManifest(b)
	if !ok {
		t.Fatal("the fast decoder gave up on what Write wrote")
	}
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("fast decode:\n%+v\nwant\n%+v", got, want)
	}
	m, err := Load(path)
	if err != nil || !reflect.DeepEqual(m, want) {
		t.Errorf("Load: %+v, %v", m, err)
	}
}

// TestDecodeGivesUp: inputs outside the plain subset go to encoding/json,
// which decides; Load's answer is encoding/json's either way.
func TestDecodeGivesUp(t *testing.T) {
	for _, in := range []string{
		``,
		`{"version":1,"entries":[{"intent":"a\"b"}]}`, // escapes
		`{"version":1,"entries":[{"intent":"a\nb"}]}`,
		`{"version":1,"entries":[{"intent":"\u0041"}]}`,
		`{"version":1,"binaries":null}`,
		`{"version":1,"Version":2}`, // encoding/json matches keys case-insensitively
		`{"version":1,"version":2}`,
		`{"version":1,"binaries":[{"identity":{"dev":1},"identity":{"ino":2}}]}`, // json merges
		`{"version":1.0}`,
		`{"version":1e0}`,
		`{"version":01}`,
		`{"version":- 1}`,
		`{"version":1,"extra":true}`,
		`{"version":1} x`,
		`{"version":1,}`,
		`{"binaries":[{"identity":{"dev":-1}}]}`,
		`{"binaries":[{"identity":{"dev":18446744073709551616}}]}`,
		"{\"entries\":[{\"intent\":\"\xff\"}]}", // not UTF-8: json would replace it
		"{\"entries\":[{\"intent\":\"a\tb\"}]}",
		`{"version":1`,
		`[]`,
	} {
		if m, ok := decodeManifest([]byte(in)); ok {
			t.Errorf("%q: decoded %+v, want it left to encoding/json", in, m)
		}
	}
	// And what it takes, it takes whole.
	for _, in := range []string{
		`{}`,
		` { "version" : 1 , "binaries" : [ ] , "entries" : [ ] } `,
		`{"binaries":[{"identity":{"size":-5,"dev":0}}]}`,
	} {
		got, ok := decodeManifest([]byte(in))
		var want Manifest
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %+v %v, want %+v", in, got, ok, want)
		}
	}
}

// FuzzDecodeManifest: whatever the fast decoder accepts, encoding/json
// accepts too and reads the same.
func FuzzDecodeManifest(f *testing.F) {
	b, _ := json.MarshalIndent(sample(), "", "  ")
	f.Add(b)
	b, _ = json.Marshal(sample())
	f.Add(b)
	f.Add([]byte(`{"version":1,"binaries":[],"entries":[{"component":"a"}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, ok := decodeManifest(in)
		if !ok {
			return
		}
		var want Manifest
		if err := json.Unmarshal(in, &want); err != nil {
			t.Fatalf("fast decoder accepted %q, encoding/json: %v", in, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", in, got, want)
		}
	})
}
