package shell_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"

	"sluice/helpers/shell"
	"sluice/internal/pty"
	"sluice/msg"
	"sluice/tests/ptytest"
)

// busConfig is a private bus that lets anyone own any name, which is
// all the stand-in machined needs.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`

// startBus runs a real dbus-daemon on a socket in a temp dir and returns
// its address.
func startBus(t *testing.T) string {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatal("dbus-daemon not found: CI needs the apt package dbus")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, busConfig, filepath.Join(dir, "bus")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The address is printed once the bus listens.
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon: %v", err)
	}
	return strings.TrimSpace(addr)
}

type machinedCall struct {
	Machine, User, Path string
	Args, Env           []string
}

// fakeMachined implements OpenMachineShell the way machined does: a new
// pty, a program in a new session on it, and the master returned as a
// unix fd. It runs /bin/sh where machined would run the login shell.
type fakeMachined struct {
	t     *testing.T
	mu    sync.Mutex
	calls []machinedCall
	keep  []*os.File // fds must outlive the reply that carries them
}

func (f *fakeMachined) OpenMachineShell(machine, user, path string, args, env []string) (dbus.UnixFD, string, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, machinedCall{machine, user, path, args, env})
	switch machine {
	case "nosuch":
		return -1, "", &dbus.Error{Name: "org.freedesktop.machine1.NoSuchMachine", Body: []any{"No machine 'nosuch' known"}}
	case "notapty":
		n, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return -1, "", dbus.MakeFailedError(err)
		}
		f.keep = append(f.keep, n)
		return dbus.UnixFD(n.Fd()), "/dev/pts/0", nil
	case "readonly":
		r, w, err := os.Pipe()
		if err != nil {
			return -1, "", dbus.MakeFailedError(err)
		}
		f.keep = append(f.keep, r, w)
		return dbus.UnixFD(r.Fd()), "/dev/pts/0", nil
	}
	if path == "" {
		path, args = "/bin/sh", []string{"-sh"}
	}
	master, slave, err := pty.Open()
	if err != nil {
		return -1, "", dbus.MakeFailedError(err)
	}
	defer slave.Close()
	cmd := &exec.Cmd{Path: path, Args: args, Env: append(env, "MACHINE="+machine, "ASUSER="+user), Dir: "/",
		Stdin: slave, Stdout: slave, Stderr: slave,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: true}}
	if err := cmd.Start(); err != nil {
		master.Close()
		return -1, "", dbus.MakeFailedError(err)
	}
	go cmd.Wait()
	f.keep = append(f.keep, master)
	return dbus.UnixFD(master.Fd()), slave.Name(), nil
}

func (f *fakeMachined) last() machinedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[len(f.calls)-1]
}

// startMachined puts the stand-in on the bus under machined's name.
func startMachined(t *testing.T, addr string) *fakeMachined {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMachined{t: t}
	t.Cleanup(func() {
		conn.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, k := range f.keep {
			k.Close()
		}
	})
	if err := conn.Export(f, shell.MachinedPath, shell.MachinedInterface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(shell.MachinedName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("request name: %v, %v", reply, err)
	}
	return f
}

func TestMachinedBackend(t *testing.T) {
	addr := startBus(t)
	fake := startMachined(t, addr)
	b := &shell.Machined{Address: addr}
	ctx := context.Background()

	t.Run("login shell", func(t *testing.T) {
		sh, err := b.Open(ctx, msg.OpenShell{Machine: msg.HostMachine, User: "alice", Env: []string{"TERM=vt100"}})
		if err != nil {
			t.Fatal(err)
		}
		got := fake.last()
		want := machinedCall{Machine: ".host", User: "alice", Path: "", Args: []string{}, Env: []string{"TERM=vt100"}}
		if got.Machine != want.Machine || got.User != want.User || got.Path != want.Path ||
			!slices.Equal(got.Args, want.Args) || !slices.Equal(got.Env, want.Env) {
			t.Errorf("machined got %+v, want %+v", got, want)
		}
		checkMasterFlags(t, sh.Master)
		term, err := ptytest.New(sh.Master)
		if err != nil {
			t.Fatal(err)
		}
		defer term.Close()
		expect(t, term, `echo he''llo`, "hello")
		expect(t, term, `echo "<$0|$MACHINE|$ASUSER|$TERM>"`, "<-sh|.host|alice|vt100>")
	})

	t.Run("fixed command", func(t *testing.T) {
		sh, err := b.Open(ctx, msg.OpenShell{Machine: "web1", User: "root", Args: []string{"/bin/sh", "-i"}})
		if err != nil {
			t.Fatal(err)
		}
		got := fake.last()
		if got.Path != "/bin/sh" || !slices.Equal(got.Args, []string{"/bin/sh", "-i"}) || len(got.Env) != 0 {
			t.Errorf("machined got %+v, want path /bin/sh and argv [/bin/sh -i], no env", got)
		}
		term, err := ptytest.New(sh.Master)
		if err != nil {
			t.Fatal(err)
		}
		defer term.Close()
		expect(t, term, `echo "<$0|$MACHINE>"`, "</bin/sh|web1>")
	})

	for _, tc := range []struct{ machine, want string }{
		{"nosuch", "No machine 'nosuch' known"},
		{"notapty", "not a pty master"},
		{"readonly", "not open read-write"},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			sh, err := b.Open(ctx, msg.OpenShell{Machine: tc.machine, User: "root"})
			if err == nil {
				sh.Master.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.want)
			}
		})
	}

	t.Run("no machined on the bus", func(t *testing.T) {
		_, err := (&shell.Machined{Address: startBus(t)}).Open(ctx, msg.OpenShell{Machine: msg.HostMachine, User: "root"})
		if err == nil || !strings.Contains(err.Error(), shell.MachinedName) {
			t.Fatalf("err %v, want one naming %s", err, shell.MachinedName)
		}
	})

	t.Run("no bus", func(t *testing.T) {
		_, err := (&shell.Machined{Address: "unix:path=" + filepath.Join(t.TempDir(), "none")}).Open(ctx, msg.OpenShell{Machine: msg.HostMachine, User: "root"})
		if err == nil || !strings.Contains(err.Error(), "connect to the bus") {
			t.Fatalf("err %v", err)
		}
	})
}
