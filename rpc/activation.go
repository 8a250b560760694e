package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// ActivationFiles returns the fds passed by systemd or the embedded runner
// (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), named by LISTEN_FDNAMES, and
// unsets the variables so children do not inherit them.
func ActivationFiles() []*os.File {
	return activation.Files(true)
}

// IsListening reports whether f is a socket in the listening state, which
// tells an Accept=no socket (serve forever) from an Accept=yes connection
// (serve one call, exit).
func IsListening(f *os.File) (bool, error) {
	v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return false, fmt.Errorf("rpc: %s: SO_ACCEPTCONN: %w", f.Name(), err)
	}
	return v == 1, nil
}

// ServeFiles serves on activation fds: every listening unix socket is
// served until ctx ends; a connected one (Accept=yes) gets its one call
// and ServeFiles returns. Fds that are not unix sockets are an error.
func ServeFiles(ctx context.Context, s *Server, files []*os.File) error {
	if len(files) == 0 {
		return errors.New("rpc: no sockets passed (LISTEN_FDS unset); use --listen PATH")
	}
	var listeners []*net.UnixListener
	for _, f := range files {
		listening, err := IsListening(f)
		if err != nil {
			return err
		}
		if listening {
			fl, err := net.FileListener(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("rpc: activation fd %s: %w", f.Name(), err)
			}
			ul, ok := fl.(*net.UnixListener)
			if !ok {
				fl.Close()
				return fmt.Errorf("rpc: activation fd %s is not a unix socket", f.Name())
			}
			// systemd owns the path; closing ours must not unlink it.
			ul.SetUnlinkOnClose(false)
			listeners = append(listeners, ul)
			continue
		}
		fc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("rpc: activation fd %s: %w", f.Name(), err)
		}
		uc, ok := fc.(*net.UnixConn)
		if !ok {
			fc.Close()
			return fmt.Errorf("rpc: activation fd %s is not a unix socket", f.Name())
		}
		if len(files) != 1 {
			uc.Close()
			return fmt.Errorf("rpc: Accept=yes connection among %d fds", len(files))
		}
		return s.ServeConn(ctx, uc)
	}
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errc <- s.Serve(ctx, l) }()
	}
	var first error
	for range listeners {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ServeMain is the serve step of a helper's main: with a non-empty listen
// path it listens there itself (development; see Listen), otherwise it
// serves files, the activation sockets (ServeFiles). A service that also
// gets other fds (those it stored in its fd store) leaves them out of
// files first, with SplitFiles.
func ServeMain(ctx context.Context, s *Server, listen string, mode os.FileMode, files []*os.File) error {
	if listen != "" {
		l, err := Listen(listen, mode)
		if err != nil {
			return err
		}
		defer l.Close()
		return s.Serve(ctx, l)
	}
	return ServeFiles(ctx, s, files)
}

// SplitFiles separates activation files by name prefix: those whose
// LISTEN_FDNAMES name starts with prefix, and the rest.
func SplitFiles(files []*os.File, prefix string) (match, rest []*os.File) {
	for _, f := range files {
		if strings.HasPrefix(f.Name(), prefix) {
			match = append(match, f)
		} else {
			rest = append(rest, f)
		}
	}
	return match, rest
}
