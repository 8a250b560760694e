package container

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// rootfs is a root file system being laid out in a host directory. Every
// path it makes is owned by host root, which no sandbox maps: inside they
// belong to nobody, and only their "other" bits count.
type rootfs struct {
	dir    string
	mounts []Mount
}

func (r *rootfs) path(p string) string { return filepath.Join(r.dir, p) }

func (r *rootfs) mkdir(paths ...string) error {
	for _, p := range paths {
		if err := os.MkdirAll(r.path(p), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (r *rootfs) file(p string, data []byte, mode os.FileMode) error {
	if err := r.mkdir(filepath.Dir(p)); err != nil {
		return err
	}
	if err := os.WriteFile(r.path(p), data, mode); err != nil {
		return err
	}
	return os.Chmod(r.path(p), mode)
}

// bind adds a bind mount of a host file or directory at p, making the
// mount point.
func (r *rootfs) bind(source, p string, readOnly bool) error {
	// Programs share libraries: one mount for each.
	for _, m := range r.mounts {
		if m.Kind == "bind" && m.Target == p {
			return nil
		}
	}
	st, err := os.Stat(source)
	if err != nil {
		return err
	}
	if st.IsDir() {
		err = r.mkdir(p)
	} else if _, serr := os.Lstat(r.path(p)); serr != nil {
		err = r.file(p, nil, 0o644)
	}
	if err != nil {
		return err
	}
	r.mounts = append(r.mounts, Mount{Kind: "bind", Source: source, Target: p, ReadOnly: readOnly})
	return nil
}

// program binds a dynamically linked host program at p, read-only, with
// its ELF interpreter and the shared objects it needs, each at the path
// the loader will look for it. Nothing else of the host's /lib comes in.
func (r *rootfs) program(host, p string) error {
	objs, err := sharedObjects(host)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(host)
	if err != nil {
		return err
	}
	if err := r.bind(real, p, true); err != nil {
		return err
	}
	for _, o := range objs {
		real, err := filepath.EvalSymlinks(o)
		if err != nil {
			return err
		}
		if err := r.bind(real, o, true); err != nil {
			return err
		}
	}
	return nil
}

// libDirs is where the loader looks without an ld.so.cache, in its order
// (Debian's multiarch directories first).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// sharedObjects returns the ELF interpreter and every shared object an
// executable needs, transitively, as the paths the loader opens.
func sharedObjects(path string) ([]string, error) {
	var out []string
	var walk func(path string, interp bool) error
	walk = func(path string, interp bool) error {
		f, err := elf.Open(path)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		defer f.Close()
		if interp {
			for _, p := range f.Progs {
				if p.Type != elf.PT_INTERP {
					continue
				}
				b := make([]byte, p.Filesz)
				if _, err := p.ReadAt(b, 0); err != nil {
					return fmt.Errorf("rootfs: %s: interpreter: %w", path, err)
				}
				ip := strings.TrimRight(string(b), "\x00")
				if !slices.Contains(out, ip) {
					out = append(out, ip)
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("rootfs: %s: %w", path, err)
		}
		for _, lib := range libs {
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					found = filepath.Join(d, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("rootfs: %s needs %s, not found in %v", path, lib, libDirs)
			}
			if slices.Contains(out, found) {
				continue
			}
			out = append(out, found)
			if err := walk(found, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(path, true); err != nil {
		return nil, err
	}
	return out, nil
}

// loginParts lays out in the shell sandbox's root what the embedded
// backend's login needs, as a host has it: sluice-login root's own (the
// helper refuses one anyone else could replace) beside the helper, its C
// library and libpam, the host's PAM stack (modules and the libraries they
// load, /etc/pam.d, /etc/security, login.defs) read-only, a shadow file,
// and a writable /var/run for utmp. base is the test's directory,
// hostRoot the host uid of the sandbox's root.
func loginParts(r *rootfs, base string, hostRoot uint32) error {
	const dst = "usr/lib/sluice/sluice-login"
	if err := r.mkdir("usr/lib/sluice"); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(base, "bin", "sluice-login"), r.path(dst), 0o755); err != nil {
		return err
	}
	for _, p := range []string{dst, "usr/lib/sluice"} {
		if err := os.Chown(r.path(p), int(hostRoot), int(hostRoot)); err != nil {
			return err
		}
	}
	objs, err := sharedObjects(r.path(dst))
	if err != nil {
		return err
	}
	// libpam opens its modules from the directory it was built for,
	// beside itself on Debian, and each module brings its own libraries.
	var modDir string
	for _, o := range objs {
		if strings.HasPrefix(filepath.Base(o), "libpam.so") {
			modDir = filepath.Join(filepath.Dir(o), "security")
		}
	}
	mods, err := filepath.Glob(filepath.Join(modDir, "*.so"))
	if err != nil || len(mods) == 0 {
		return fmt.Errorf("rootfs: no PAM modules in %q: %v", modDir, err)
	}
	for _, m := range mods {
		deps, err := sharedObjects(m)
		if err != nil {
			return err
		}
		objs = append(objs, deps...)
	}
	for _, o := range objs {
		real, err := filepath.EvalSymlinks(o)
		if err != nil {
			return err
		}
		if err := r.bind(real, o, true); err != nil {
			return err
		}
	}
	real, err := filepath.EvalSymlinks(modDir)
	if err != nil {
		return err
	}
	if err := r.bind(real, modDir, true); err != nil {
		return err
	}
	for _, p := range []string{"/etc/pam.d", "/etc/security", "/etc/login.defs", "/etc/environment", "/etc/default/locale"} {
		if _, err := os.Stat(p); err != nil {
			continue // pam_env and login.defs' readers take a missing file as empty
		}
		if err := r.bind(p, p, true); err != nil {
			return err
		}
	}
	// An account that never had a password ("*"), as useradd makes and
	// a passkey-only account is; readable by the sandbox's root only.
	shadow := "root:*:20000:0:99999:7:::\nsh-user:*:20000:0:99999:7:::\n"
	if err := r.file("etc/shadow", []byte(shadow), 0o640); err != nil {
		return err
	}
	if err := os.Chown(r.path("etc/shadow"), int(hostRoot), int(hostRoot)); err != nil {
		return err
	}
	if err := r.mkdir("var/run"); err != nil {
		return err
	}
	r.mounts = append(r.mounts, Mount{Kind: "tmpfs", Target: "/var/run", Options: "size=1m,mode=0755"})
	return nil
}
