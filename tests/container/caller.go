package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"sluice/msg"
	"sluice/rpc"
)

// CallSpec is one call a caller process makes.
type CallSpec struct {
	Path   string    `json:"path"`
	Hello  rpc.Hello `json:"hello"`
	Expect rpc.Hello `json:"expect"`
	Op     string    `json:"op"`
	Args   []byte    `json:"args"`    // msgpack of the op's argument type
	SendFD bool      `json:"send_fd"` // send fd 4 with the request
}

// CallResult is what the caller saw. Err is empty on success; Code and
// Msg come from an error frame; Errno from a failed connect.
type CallResult struct {
	Err   string `json:"err,omitempty"`
	Code  string `json:"code,omitempty"`
	Msg   string `json:"msg,omitempty"`
	Errno int    `json:"errno,omitempty"`
	Reply []byte `json:"reply,omitempty"` // the payload frame (msgpack)
	NFDs  int    `json:"nfds"`
}

// Caller is a host identity calling from outside every sandbox.
type Caller struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
}

// Call runs exe as a caller process with c's host identity, makes the call
// there and returns its result with the fds it received.
func (c Caller) Call(exe string, cs CallSpec, send *os.File) (CallResult, []*os.File, error) {
	var res CallResult
	in, err := json.Marshal(cs)
	if err != nil {
		return res, nil, err
	}
	// fd 3 carries received fds back to us; fd 4 is the one to send.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return res, nil, err
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "fds-ours"), os.NewFile(uintptr(pair[1]), "fds-theirs")
	defer ours.Close()
	cmd := exec.Command(exe)
	cmd.Args[0] = "caller-" + c.Name
	cmd.Env = []string{RoleEnv + "=caller"}
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.ExtraFiles = []*os.File{theirs}
	if send != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, send)
	}
	groups := c.Groups
	if groups == nil {
		groups = []uint32{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: groups}}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return res, nil, err
	}
	var fds []*os.File
	var recvErr error
	var wg sync.WaitGroup
	wg.Go(func() { fds, recvErr = receiveFDs(ours) })
	err = cmd.Wait()
	wg.Wait()
	if err != nil {
		closeAll(fds)
		return res, nil, fmt.Errorf("caller %s: %v\n%s", c.Name, err, stderr.String())
	}
	if recvErr != nil {
		return res, nil, recvErr
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		closeAll(fds)
		return res, nil, fmt.Errorf("caller %s said %q: %w\n%s", c.Name, out.String(), err, stderr.String())
	}
	return res, fds, nil
}

func receiveFDs(f *os.File) ([]*os.File, error) {
	var fds []*os.File
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*8))
	for {
		n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("receive fds: %w", err)
		}
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				closeAll(fds)
				return nil, err
			}
			for i := range msgs {
				got, err := unix.ParseUnixRights(&msgs[i])
				if err != nil {
					closeAll(fds)
					return nil, err
				}
				for _, fd := range got {
					fds = append(fds, os.NewFile(uintptr(fd), "received"))
				}
			}
		}
		if n == 0 {
			return fds, nil
		}
	}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// RunCaller makes the call described on stdin and prints a CallResult.
func RunCaller() {
	var cs CallSpec
	res := CallResult{}
	defer func() { json.NewEncoder(os.Stdout).Encode(res) }()
	in, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = json.Unmarshal(in, &cs)
	}
	if err != nil {
		res.Err = err.Error()
		return
	}
	cl := &rpc.Client{Path: cs.Path, Hello: cs.Hello, Expect: cs.Expect}
	body, err := msgpack.Marshal(msg.Request{Op: cs.Op, Args: cs.Args})
	if err != nil {
		res.Err = err.Error()
		return
	}
	var send []*os.File
	if cs.SendFD {
		send = []*os.File{os.NewFile(4, "send")}
	}
	reply, fds, err := cl.CallRaw(context.Background(), body, send)
	back := os.NewFile(3, "fds-back")
	if len(fds) > 0 {
		ints := make([]int, len(fds))
		for i, f := range fds {
			ints[i] = int(f.Fd())
		}
		if serr := unix.Sendmsg(int(back.Fd()), []byte{1}, unix.UnixRights(ints...), nil, 0); serr != nil {
			res.Err = "send fds back: " + serr.Error()
		}
		res.NFDs = len(fds)
	}
	back.Close()
	if err != nil {
		res.Err = err.Error()
		var re *rpc.RemoteError
		if errors.As(err, &re) {
			res.Code, res.Msg = re.Code, re.Msg
		}
		var errno syscall.Errno
		var op *net.OpError
		if errors.As(err, &op) && errors.As(err, &errno) {
			res.Errno = int(errno)
		}
		return
	}
	res.Reply = reply
}
