package scripts_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sluice/audit"
	"sluice/internal/installtest"
	"sluice/rpc/buildid"
	"sluice/suite"
)

func TestMain(m *testing.M) {
	code := m.Run()
	installtest.Cleanup()
	os.Exit(code)
}

// tree lists every file and link under root with its mode, relative.
func tree(t *testing.T, root string) map[string]fs.FileMode {
	t.Helper()
	out := map[string]fs.FileMode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out["/"+rel] = fi.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInstallTree(t *testing.T) {
	for _, prefix := range []string{"/usr", "/opt/sluice"} {
		t.Run(prefix, func(t *testing.T) {
			dest := installtest.Install(t, prefix)
			got := tree(t, dest)
			p := strings.TrimPrefix(prefix, "/")
			want := map[string]fs.FileMode{
				"/" + p + "/bin/sluicectl":                          fs.ModeSymlink | 0o777,
				"/" + p + "/libexec/sluice/sluicectl":               0o755,
				"/" + p + "/libexec/sluice/sluice-auth":             0o755,
				"/" + p + "/libexec/sluice/sluice-policy":           0o755,
				"/" + p + "/libexec/sluice/sluice-shell":            0o755,
				"/" + p + "/libexec/sluice/sluice-ptystore":         0o755,
				"/" + p + "/libexec/sluice/sluice-hangup":           0o755,
				"/" + p + "/libexec/sluice/sluice-record":           0o755,
				"/" + p + "/libexec/sluice/sluice-frontend":         0o755,
				"/" + p + "/libexec/sluice/build-ids.json":          0o644,
				"/" + p + "/lib/sysusers.d/sluice.conf":             0o644,
				"/" + p + "/lib/tmpfiles.d/sluice.conf":             0o644,
				"/" + p + "/share/polkit-1/rules.d/50-sluice.rules": 0o644,
				"/" + p + "/share/doc/sluice/operations.md":         0o644,
				"/" + p + "/share/doc/sluice/recording.md":          0o644,
				"/etc/sluice/policy":                                0o644,
			}
			for _, opt := range []string{"sluice", "sluice-login", "sluice-relay"} {
				if _, err := os.Stat(filepath.Join(installtest.Build(t), opt)); err == nil {
					want["/"+p+"/libexec/sluice/"+opt] = 0o755
				}
			}
			// The relay's profile, for a fleet host (docs/fleet.md), when built.
			if _, err := os.Stat(filepath.Join(installtest.Build(t), "sluice-relay")); err == nil {
				want["/etc/apparmor.d/"+strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", ".")+".libexec.sluice.sluice-relay"] = 0o644
			}
			// The fleet's gateway helper, when built: its binary, units and
			// profile (docs/fleet.md); not part of sluice.target.
			if _, err := os.Stat(filepath.Join(installtest.Build(t), "sluice-fleet")); err == nil {
				want["/"+p+"/libexec/sluice/sluice-fleet"] = 0o755
				want["/"+p+"/lib/systemd/system/sluice-fleet.service"] = 0o644
				want["/"+p+"/lib/systemd/system/sluice-fleet.socket"] = 0o644
				want["/etc/apparmor.d/"+strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", ".")+".libexec.sluice.sluice-fleet"] = 0o644
			}
			for _, h := range audit.Helpers() {
				want["/"+p+"/lib/systemd/system/"+h.Socket] = 0o644
				want["/"+p+"/lib/systemd/system/"+h.Service] = 0o644
				prof := h.Profile
				if prefix != "/usr" {
					prof = strings.Replace(prof, "usr.libexec", strings.ReplaceAll(p, "/", ".")+".libexec", 1)
				}
				want["/etc/apparmor.d/"+prof] = 0o644
			}
			want["/"+p+"/lib/systemd/system/sluice.target"] = 0o644
			want["/"+p+"/lib/systemd/system/sluice-keys.service"] = 0o644
			for path, mode := range want {
				if m, ok := got[path]; !ok {
					t.Errorf("missing %s", path)
				} else if m != mode {
					t.Errorf("%s: mode %v, want %v", path, m, mode)
				}
			}
			var extra []string
			for path := range got {
				if _, ok := want[path]; !ok {
					extra = append(extra, path)
				}
			}
			sort.Strings(extra)
			if len(extra) > 0 {
				t.Errorf("unexpected files: %v", extra)
			}

			// Every ExecStart names an executable in the tree, and nothing
			// still points at /usr when the prefix is elsewhere.
			units, _ := filepath.Glob(filepath.Join(dest, p, "lib/systemd/system/*.service"))
			for _, u := range units {
				unit, err := audit.ParseUnitFile(u)
				if err != nil {
					t.Fatal(err)
				}
				argv, err := audit.SplitCommand(unit.Value("Service", "ExecStart"))
				if err != nil {
					t.Fatalf("%s: %v", u, err)
				}
				if !strings.HasPrefix(argv[0], prefix+"/") {
					t.Errorf("%s: ExecStart %s outside %s", filepath.Base(u), argv[0], prefix)
				}
				fi, err := os.Stat(filepath.Join(dest, argv[0]))
				if err != nil || fi.Mode()&0o111 == 0 || !fi.Mode().IsRegular() {
					t.Errorf("%s: ExecStart %s is not an executable in the tree: %v", filepath.Base(u), argv[0], err)
				}
			}
			if prefix != "/usr" {
				out, _ := exec.Command("grep", "-rl", "/usr/libexec", filepath.Join(dest, "etc"), filepath.Join(dest, p, "lib")).Output()
				if len(out) > 0 {
					t.Errorf("files still naming /usr/libexec:\n%s", out)
				}
			}
			// Each profile attaches to a binary that is there.
			profs, _ := filepath.Glob(filepath.Join(dest, "etc/apparmor.d/*"))
			for _, pf := range profs {
				prof, err := audit.ParseProfileFile(pf)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(dest, prof.Attach)); err != nil {
					t.Errorf("%s attaches to %s, not installed: %v", filepath.Base(pf), prof.Attach, err)
				}
			}

			// The manifest covers every installed component and matches
			// the installed files, so helpers take the precomputed IDs.
			libexec := filepath.Join(dest, p, "libexec/sluice")
			m, err := buildid.Load(filepath.Join(libexec, "build-ids.json"))
			if err != nil {
				t.Fatal(err)
			}
			for _, comp := range suite.Components() {
				found := false
				for _, b := range m.Binaries {
					if b.Component == comp {
						found = true
						id, err := buildid.Stat(filepath.Join(libexec, b.File))
						if err != nil || id != b.Identity {
							t.Errorf("%s: manifest identity %+v, file %+v %v", comp, b.Identity, id, err)
						}
					}
				}
				if !found {
					t.Errorf("manifest has no %s", comp)
				}
			}
		})
	}
}

// TestKeepsPolicy: reinstalling over an edited policy keeps the admin's
// file and puts the default beside it.
func TestKeepsPolicy(t *testing.T) {
	dest := installtest.Install(t, "/usr")
	pol := filepath.Join(dest, "etc/sluice/policy")
	if err := os.WriteFile(pol, []byte("allow alice as alice on .host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := installtest.Build(t)
	out, err := exec.Command(filepath.Join(installtest.Root(t), "scripts/install.sh"), dest, "/usr", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("reinstall: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(pol); string(b) != "allow alice as alice on .host\n" {
		t.Errorf("policy overwritten: %q", b)
	}
	if _, err := os.Stat(pol + ".default"); err != nil {
		t.Errorf("no policy.default beside the kept policy: %v", err)
	}
}

func TestUsage(t *testing.T) {
	script := filepath.Join(installtest.Root(t), "scripts/install.sh")
	for _, args := range [][]string{{}, {"/tmp/x"}, {"/tmp/x", "usr"}, {"/tmp/x", ""}} {
		err := exec.Command(script, args...).Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("install.sh %q: %v, want exit 2", args, err)
		}
	}
	empty := t.TempDir()
	out, err := exec.Command(script, t.TempDir(), "/usr", empty).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not built") {
		t.Errorf("install.sh from an empty bin dir: %v %s", err, out)
	}
}
