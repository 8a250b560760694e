package runner

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// prepareDirs makes the runtime directory (0700 without root; the
// configured mode, 0755 by default, when units run as other users) and
// the state directory, and clears what a previous run may have left.
func (r *Runner) prepareDirs() error {
	mode := os.FileMode(0o700)
	if r.root {
		mode = os.FileMode(r.cfg.RuntimeDirMode)
	}
	if err := mkdirMode(r.opts.RuntimeDir, mode, -1, -1); err != nil {
		return err
	}
	if err := r.lockDir(); err != nil {
		return err
	}
	removeAllWritable(filepath.Join(r.opts.RuntimeDir, "credentials"))
	os.RemoveAll(filepath.Join(r.opts.RuntimeDir, "notify"))
	if err := mkdirMode(filepath.Join(r.opts.RuntimeDir, "credentials"), 0o755, -1, -1); err != nil {
		return err
	}
	if err := mkdirMode(filepath.Join(r.opts.RuntimeDir, "notify"), 0o755, -1, -1); err != nil {
		return err
	}
	if err := mkdirMode(r.opts.StateDir, 0o755, -1, -1); err != nil {
		return err
	}
	if err := mkdirMode(filepath.Join(r.opts.StateDir, "credentials"), 0o700, -1, -1); err != nil {
		return err
	}
	return r.writeFiles()
}

// mkdirMode creates dir if needed and sets its mode (and owner, unless -1)
// exactly, whatever the umask.
func mkdirMode(dir string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	// MkdirAll accepts a symbolic link to a directory, and chmod and chown
	// would act on its target: never on a path someone else planted.
	if st, err := os.Lstat(dir); err != nil {
		return fmt.Errorf("runner: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("runner: %s is not a directory (a symbolic link?)", dir)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	if uid >= 0 || gid >= 0 {
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fmt.Errorf("runner: %w", err)
		}
	}
	return nil
}

// removeAllWritable is os.RemoveAll for trees whose directories were made
// read-only (credential directories are 0500).
func removeAllWritable(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.RemoveAll(dir)
}

// KeySize is the size of the keys the runner generates (grant.key).
const KeySize = 32

// installCredentials fills the unit's CREDENTIALS_DIRECTORY as
// LoadCredential= does: a copy of each file, 0400, owned by the unit's
// user, in a directory only it can read. Copies, not links, so the unit
// can neither change the source nor see its path, and a chown does not
// reach the source.
func (r *Runner) installCredentials(u *unit) error {
	if len(u.cfg.Credentials) == 0 {
		return nil
	}
	dir := r.credDir(u.cfg.Name)
	if err := mkdirMode(dir, 0o700, -1, -1); err != nil {
		return err
	}
	for _, c := range u.cfg.Credentials {
		name, src, hasPath := strings.Cut(c, ":")
		if !hasPath {
			src = filepath.Join(r.opts.StateDir, "credentials", name)
			if err := ensureKey(src); err != nil {
				return fmt.Errorf("runner: unit %s: credential %s: %w", u.cfg.Name, name, err)
			}
		} else if s, err := r.Expand(src); err != nil {
			return err
		} else {
			src = s
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("runner: unit %s: credential %s: %w", u.cfg.Name, name, err)
		}
		dst := filepath.Join(dir, name)
		if err := os.WriteFile(dst, b, 0o400); err != nil {
			return fmt.Errorf("runner: unit %s: credential %s: %w", u.cfg.Name, name, err)
		}
		if u.id.switchTo {
			if err := os.Lchown(dst, int(u.id.uid), int(u.id.gid)); err != nil {
				return fmt.Errorf("runner: unit %s: credential %s: %w", u.cfg.Name, name, err)
			}
		}
	}
	uid, gid := -1, -1
	if u.id.switchTo {
		uid, gid = int(u.id.uid), int(u.id.gid)
	}
	return mkdirMode(dir, 0o500, uid, gid)
}

// ensureKey creates a key file of KeySize random bytes, 0600, unless one
// is there. O_EXCL: two runners starting at once cannot both write one.
func ensureKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// stateDirectory makes STATE_DIR/NAME, 0700, owned by the unit's user.
// When the unit's user changed since the last run (another fallback
// account), the whole tree is handed over, as systemd does for
// DynamicUser state.
func (r *Runner) stateDirectory(u *unit) error {
	return r.ownedDirectory(u, u.cfg.Name, 0o700)
}

// publicDirectory makes STATE_DIR/PublicDirectory, 0755, owned by the
// unit's user.
func (r *Runner) publicDirectory(u *unit) error {
	name := u.cfg.PublicDirectory
	if name != filepath.Base(name) || name == "." || name == ".." || name == "credentials" || name == "files" {
		return fmt.Errorf("runner: unit %s: public_directory %q must be a plain name", u.cfg.Name, name)
	}
	return r.ownedDirectory(u, name, 0o755)
}

func (r *Runner) ownedDirectory(u *unit, name string, mode os.FileMode) error {
	dir := filepath.Join(r.opts.StateDir, name)
	if !u.id.switchTo {
		return mkdirMode(dir, mode, -1, -1)
	}
	uid, gid := int(u.id.uid), int(u.id.gid)
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err == nil && (int(st.Uid) != uid || int(st.Gid) != gid) {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil {
				os.Lchown(p, uid, gid)
			}
			return nil
		})
	}
	return mkdirMode(dir, mode, uid, gid)
}

// maxLogLine: longer lines are cut into pieces of this size.
const maxLogLine = 16 << 10

// startLog makes the pipe all the unit's processes write stdout and
// stderr to, and forwards it line by line to the runner's log. One pipe per
// unit: writes up to PIPE_BUF are atomic, so lines of concurrent instances
// do not interleave, and a spawn costs no extra pipe or goroutine.
func (u *unit) startLog() error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("runner: unit %s: log pipe: %w", u.cfg.Name, err)
	}
	// The read end goes to Go's poller; the write end stays blocking, as a
	// child's stdout should be. A larger buffer (1 MiB where
	// fs.pipe-max-size allows) lets a burst of calls' log lines wait for
	// the runner instead of holding up the helpers that write them.
	unix.SetNonblock(p[0], true)
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20)
	rd := os.NewFile(uintptr(p[0]), u.cfg.Name+"-log")
	u.logR = rd
	u.logW = os.NewFile(uintptr(p[1]), u.cfg.Name+"-log-w")
	u.logDone = make(chan struct{})
	log := u.r.log.With("unit", u.cfg.Name)
	ul := newUnitLogger(u.r.log, u.cfg.Name)
	go func() {
		defer close(u.logDone)
		defer rd.Close()
		br := bufio.NewReaderSize(rd, maxLogLine)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				ul.line(bytes.TrimRight(line, "\r\n"))
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
					log.Warn("runner: log pipe", "err", err)
				}
				return
			}
		}
	}()
	return nil
}

// logFiles are a child's stdin, stdout, stderr.
func (u *unit) logFiles() []syscall.Conn {
	return []syscall.Conn{nil, u.logW, u.logW}
}

// file is one of the config's files as resolved for this run.
type file struct {
	path    string
	content []byte // what the runner writes there; nil: an existing file
}

// resolveFiles picks each file's path: the first existing one of Use,
// else STATE_DIR/files/NAME with the expanded default.
func (r *Runner) resolveFiles() error {
	r.files = map[string]*file{}
	for _, f := range r.cfg.Files {
		var use string
		for _, p := range f.Use {
			p, err := r.Expand(p)
			if err != nil {
				return fmt.Errorf("runner: file %s: %w", f.Name, err)
			}
			if _, err := os.Stat(p); err == nil {
				use = p
				break
			}
		}
		if use != "" {
			r.files[f.Name] = &file{path: use}
			r.log.Info("runner: file", "name", f.Name, "path", use)
			continue
		}
		content, err := r.Expand(f.Default)
		if err != nil {
			return fmt.Errorf("runner: file %s: default: %w", f.Name, err)
		}
		r.files[f.Name] = &file{path: filepath.Join(r.opts.StateDir, "files", f.Name), content: []byte(content)}
	}
	return nil
}

// writeFiles writes the files that take their default, replacing what a
// previous run wrote (which may have been for another user): one write,
// renamed into place, so a unit never reads half a file.
func (r *Runner) writeFiles() error {
	for name, f := range r.files {
		if f.content == nil {
			continue
		}
		if err := mkdirMode(filepath.Dir(f.path), 0o755, -1, -1); err != nil {
			return err
		}
		tmp := f.path + ".new"
		os.Remove(tmp)
		w, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
		if err == nil {
			_, err = w.Write(f.content)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("runner: file %s: %w", name, err)
		}
		if err := os.Chmod(tmp, 0o644); err != nil {
			return fmt.Errorf("runner: file %s: %w", name, err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			return fmt.Errorf("runner: file %s: %w", name, err)
		}
		r.log.Info("runner: file written", "name", name, "path", f.path)
	}
	return nil
}
