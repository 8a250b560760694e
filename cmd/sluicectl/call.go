package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

func runCall(ctx context.Context, g *globals, args []string) error {
	fs := flags("call", "call [--protocol NAME] [--as COMPONENT] HELPER OP [JSON-ARGS]", g)
	proto := fs.String("protocol", "", "protocol to speak (default: the admin one, or the helper's only one)")
	as := fs.String("as", "", "component to present as (default: the protocol's client); its build ID comes from the manifest")
	if err := parse(fs, g, args); err != nil {
		return err
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		return usageErr("want HELPER OP [JSON-ARGS]")
	}
	helper, op := fs.Arg(0), fs.Arg(1)
	p, err := pickProtocol(helper, *proto)
	if err != nil {
		return err
	}
	argJSON := "{}"
	if fs.NArg() == 3 {
		argJSON = fs.Arg(2)
	}
	argVal, err := fromJSON(argJSON)
	if err != nil {
		return usageErr("JSON-ARGS: %v", err)
	}
	raw, err := msgpack.Marshal(argVal)
	if err != nil {
		return fmt.Errorf("encode args: %w", err)
	}
	cl, err := clientFor(p, *as, g)
	if err != nil {
		return err
	}
	body, err := msgpack.Marshal(msg.Request{Op: op, Args: raw})
	if err != nil {
		return err
	}
	payload, fds, err := cl.CallRaw(ctx, body, nil)
	if err != nil {
		return explain(err, cl.Path)
	}
	for i, f := range describeFDs(fds) {
		fmt.Fprintf(g.err, "fd %d on the reply: %s\n", i, f)
	}
	var reply any
	if err := msgpack.Unmarshal(payload, &reply); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	return printJSON(g.out, jsonable(reply))
}

// pickProtocol chooses the protocol to HELPER: the named one, else the
// admin protocol it serves, else its only one.
func pickProtocol(helper, name string) (msg.Protocol, error) {
	var served []msg.Protocol
	for _, p := range msg.Protocols {
		if p.Server == helper {
			served = append(served, p)
		}
	}
	if len(served) == 0 {
		return msg.Protocol{}, usageErr("no protocol is served by %q (helpers: auth, policy, shell, ptystore)", helper)
	}
	names := make([]string, len(served))
	for i, p := range served {
		names[i] = p.Name
		if name != "" && p.Name == name {
			return p, nil
		}
	}
	if name != "" {
		return msg.Protocol{}, usageErr("%s does not serve %q (it serves %s)", helper, name, strings.Join(names, ", "))
	}
	for _, p := range served {
		if p.Client == msg.Admin {
			return p, nil
		}
	}
	if len(served) == 1 {
		return served[0], nil
	}
	return msg.Protocol{}, usageErr("%s serves %s: pick one with --protocol", helper, strings.Join(names, ", "))
}

// clientFor builds a client for p. As sluicectl on an admin protocol it
// presents its own build ID; as any other component it presents that
// component's ID from the manifest (IDs are public: they catch version
// skew, they are not credentials; the kernel-reported uid still decides).
func clientFor(p msg.Protocol, as string, g *globals) (*rpc.Client, error) {
	if as == "" {
		as = p.Client
	}
	if as != p.Client {
		return nil, usageErr("%q is spoken by %s, not %s", p.Name, p.Client, as)
	}
	if as == msg.Admin {
		cl, err := suite.Client(msg.Admin, p.Name)
		if err != nil {
			return nil, err
		}
		cl.Timeout = g.timeout
		return cl, nil
	}
	m, err := suite.Manifest()
	if err != nil {
		return nil, err
	}
	mine := rpc.Hello{Intent: msg.Intent(p, "client")}
	e, err := m.Lookup(p.Client, mine.Intent)
	if err != nil {
		return nil, err
	}
	mine.BuildID = e.BuildID
	peer := rpc.Hello{Intent: msg.Intent(p, "server")}
	if e, err = m.Lookup(p.Server, peer.Intent); err != nil {
		return nil, err
	}
	peer.BuildID = e.BuildID
	fmt.Fprintf(g.err, "speaking %q as %s, with its build ID from the manifest\n", p.Name, p.Client)
	return &rpc.Client{Path: suite.SocketPath(p.Server), Hello: mine, Expect: peer, Timeout: g.timeout}, nil
}

// fromJSON decodes request arguments: integers stay integers (msgpack
// keeps the distinction), and a string "base64:..." becomes bytes, for
// the []byte fields (grant MACs, sealed states).
func fromJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return convert(v)
}

func convert(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		return x.Float64()
	case string:
		if b, ok := strings.CutPrefix(x, "base64:"); ok {
			return base64.StdEncoding.DecodeString(b)
		}
		return x, nil
	case []any:
		for i := range x {
			c, err := convert(x[i])
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	case map[string]any:
		for k := range x {
			c, err := convert(x[k])
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	}
	return v, nil
}

// jsonable makes a decoded msgpack value printable as JSON: maps with
// non-string keys get string keys, and bytes that hold JSON (WebAuthn
// options) are shown as that JSON; other bytes as "base64:...".
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k := range x {
			x[k] = jsonable(x[k])
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, val := range x {
			m[fmt.Sprint(k)] = jsonable(val)
		}
		return m
	case []any:
		for i := range x {
			x[i] = jsonable(x[i])
		}
		return x
	case []byte:
		if t := bytes.TrimSpace(x); len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t) {
			return json.RawMessage(t)
		}
		return "base64:" + base64.StdEncoding.EncodeToString(x)
	}
	return v
}

type fdInfo struct{ desc string }

func (f *fdInfo) String() string { return f.desc }

// describeFDs says what came back on a reply (readlink of the fd), and
// closes the fds: sluicectl has no use for a pty master.
func describeFDs(fds []*os.File) []*fdInfo {
	var out []*fdInfo
	for _, f := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if err != nil {
			target = err.Error()
		}
		out = append(out, &fdInfo{target})
		f.Close()
	}
	return out
}
