package shell

import (
	"context"
	"fmt"
	"os"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"sluice/msg"
)

// The machined D-Bus API, as "machinectl shell" uses it.
const (
	MachinedName      = "org.freedesktop.machine1"
	MachinedPath      = dbus.ObjectPath("/org/freedesktop/machine1")
	MachinedInterface = "org.freedesktop.machine1.Manager"
	OpenMachineShell  = MachinedInterface + ".OpenMachineShell"
)

// Machined opens shells through systemd-machined's OpenMachineShell. The
// privilege is machined's: polkit lets this helper's account call it (see
// polkit/50-sluice.rules); the helper itself needs no capability.
type Machined struct {
	// Address is the bus address; empty means the system bus
	// ($DBUS_SYSTEM_BUS_ADDRESS or its default path).
	Address string
}

// Open calls OpenMachineShell(machine, user, path, args, env). An empty
// path and args make machined start the account's login shell; a fixed
// command is sent as path = args[0] and args = the full argv, as machined
// wants. machined reports no pid, so PID is 0.
func (m *Machined) Open(ctx context.Context, req msg.OpenShell) (Opened, error) {
	conn, err := m.connect(ctx)
	if err != nil {
		return Opened{}, err
	}
	defer conn.Close()

	path, args := "", []string{}
	if len(req.Args) > 0 {
		path, args = req.Args[0], req.Args
	}
	env := req.Env
	if env == nil {
		env = []string{}
	}
	var (
		fd      dbus.UnixFD
		ptyPath string
	)
	call := conn.Object(MachinedName, MachinedPath).CallWithContext(ctx, OpenMachineShell, 0,
		req.Machine, req.User, path, args, env)
	if err := call.Store(&fd, &ptyPath); err != nil {
		return Opened{}, fmt.Errorf("shell: machined OpenMachineShell %s@%s: %w", req.User, req.Machine, err)
	}
	if fd < 0 {
		return Opened{}, fmt.Errorf("shell: machined returned no pty fd")
	}
	// Received fds are close-on-exec already (Go's recvmsg asks for
	// MSG_CMSG_CLOEXEC); say so explicitly, since this one is passed on.
	unix.CloseOnExec(int(fd))
	master := os.NewFile(uintptr(fd), ptyPath)
	if err := checkMaster(master); err != nil {
		master.Close()
		return Opened{}, err
	}
	return Opened{Master: master}, nil
}

func (m *Machined) connect(ctx context.Context) (*dbus.Conn, error) {
	var (
		conn *dbus.Conn
		err  error
	)
	if m.Address == "" {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Connect(m.Address, dbus.WithContext(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("shell: connect to the bus: %w", err)
	}
	if !conn.SupportsUnixFDs() {
		conn.Close()
		return nil, fmt.Errorf("shell: the bus does not pass unix fds")
	}
	return conn, nil
}

// checkMaster makes sure what came back is a pty master open for reading
// and writing, not some other fd a confused or hostile peer sent.
func checkMaster(f *os.File) error {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("shell: pty fd: %w", err)
	}
	if fl&unix.O_ACCMODE != unix.O_RDWR {
		return fmt.Errorf("shell: pty fd is not open read-write")
	}
	if _, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPTN); err != nil {
		return fmt.Errorf("shell: fd from machined is not a pty master: %w", err)
	}
	return nil
}
