// Package optable is a helper's surface as data, the way OpenSSH's monitor
// lists what its unprivileged side may ask: per protocol, a Table of ops,
// each with its argument and reply types, the fds it takes and gives, and
// its handler. Table.Handle is the one decode path every helper shares:
// it decodes the msg.Request envelope and the op's arguments with the
// rpc package's strict msgpack rules, refuses an op the table does not
// list, refuses a call whose fd count is not the op's, and hands the
// reply back to the rpc server. `sluicectl audit NAME` prints the same
// tables, so what an admin reads is what the helper serves.
package optable

import (
	"context"
	"fmt"
	"os"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
)

// None is the argument type of an op that reads no arguments: whatever
// the caller sent in args is not decoded at all.
type None struct{}

// Entry is one op of a table. Build it with Op or OpFDs.
type Entry struct {
	Name   string       // the msg.Op* constant
	Args   reflect.Type // the argument type; None's when the op reads none
	Reply  reflect.Type // the reply type
	FDsIn  int          // exactly this many fds come with the call
	FDsOut int          // at most this many go with the reply
	// Carries, for an op served through Via, is the argument type inside
	// Args that the op's own handler decodes.
	Carries reflect.Type
	// Refused, when set, is why the op is listed but always refused with
	// forbidden on this protocol (served on another one).
	Refused string

	// serve decodes raw and runs the handler; checked says raw was already
	// found well-formed (inline in a request frame the server checked).
	serve func(ctx context.Context, c *rpc.Call, raw []byte, checked bool) (rpc.Reply, error)
}

// Table is what one protocol may ask of a helper.
type Table struct {
	Protocol string // the msg protocol name; the route's intent
	Note     string // printed with the table: when it is served, what it adds
	// Guard, if set, runs on every call after the envelope is decoded and
	// before the op is looked up; an error refuses the call (auth's check
	// that an admin caller is an admin).
	Guard func(ctx context.Context, c *rpc.Call) error
	Ops   []Entry
}

// Op is the entry of an op that takes and gives no fds.
func Op[A, R any](name string, h func(ctx context.Context, c *rpc.Call, a A) (R, error)) Entry {
	e := newEntry[A, R](name, 0, 0)
	e.serve = func(ctx context.Context, c *rpc.Call, raw []byte, checked bool) (rpc.Reply, error) {
		var a A
		if err := decode(raw, &a, checked); err != nil {
			return rpc.Reply{}, err
		}
		r, err := h(ctx, c, a)
		if err != nil {
			return rpc.Reply{}, err
		}
		return rpc.Reply{Body: r}, nil
	}
	return e
}

// Plain is Op for a handler that needs neither the context nor the
// caller: what it decides follows from its arguments alone.
func Plain[A, R any](name string, h func(a A) (R, error)) Entry {
	return Op(name, func(_ context.Context, _ *rpc.Call, a A) (R, error) { return h(a) })
}

// OpFDs is the entry of an op that takes exactly in fds (the handler finds
// them in c.FDs and owns them, also when the arguments do not decode: they
// are closed then) and gives at most out fds with its reply.
func OpFDs[A, R any](name string, in, out int, h func(ctx context.Context, c *rpc.Call, a A) (R, []*os.File, error)) Entry {
	e := newEntry[A, R](name, in, out)
	e.serve = func(ctx context.Context, c *rpc.Call, raw []byte, checked bool) (rpc.Reply, error) {
		var a A
		if err := decode(raw, &a, checked); err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
		r, fds, err := h(ctx, c, a)
		if err != nil {
			closeAll(fds)
			return rpc.Reply{}, err
		}
		if len(fds) > out {
			closeAll(fds)
			return rpc.Reply{}, fmt.Errorf("optable: %s gave %d fds, its entry allows %d", name, len(fds), out)
		}
		return rpc.Reply{Body: r, FDs: fds}, nil
	}
	return e
}

// Refused is the entry of an op this protocol lists only to refuse it with
// forbidden, because it is served on another protocol of the same socket.
func Refused(name, why string) Entry {
	return Entry{Name: name, Refused: why, serve: func(context.Context, *rpc.Call, []byte, bool) (rpc.Reply, error) {
		return rpc.Reply{}, rpc.Errorf(rpc.CodeForbidden, "%s %s", name, why)
	}}
}

// Via is e served on another protocol whose arguments are W: in turns the
// call's W into e's own arguments (msgpack) or refuses the call, and then
// e runs exactly as on its own protocol: the same decode, fd counts and
// handler. The fleet's gateway protocols are the web ones this way.
func Via[W any](e Entry, in func(ctx context.Context, c *rpc.Call, w W) ([]byte, error)) Entry {
	return ViaOr(e, nil, func(ctx context.Context, c *rpc.Call, w W) ([]byte, bool, error) {
		args, err := in(ctx, c, w)
		return args, false, err
	})
}

// ViaOr is Via with a second inner entry: in also says whether alt serves
// the call instead of e (the gateway's admin host grants reach the host's
// admin table this way). alt gives what e does (reply and fds), so the
// table describes the op once; it decodes the same arguments as its own
// (an admin op may read fewer fields). A nil alt refuses what in sends it.
func ViaOr[W any](e Entry, alt *Entry, in func(ctx context.Context, c *rpc.Call, w W) (args []byte, useAlt bool, err error)) Entry {
	if alt != nil && (alt.Reply != e.Reply || alt.FDsIn != e.FDsIn || alt.FDsOut != e.FDsOut) {
		// A table built wrong at start, not input: fail before serving.
		panic(fmt.Sprintf("optable: ViaOr %s: the alternative gives another reply or other fds", e.Name))
	}
	inner := e.serve
	var other func(context.Context, *rpc.Call, []byte, bool) (rpc.Reply, error)
	if alt != nil {
		other = alt.serve
	}
	if e.Carries == nil {
		e.Carries = e.Args
	}
	e.Args = reflect.TypeOf((*W)(nil)).Elem()
	e.serve = func(ctx context.Context, c *rpc.Call, raw []byte, checked bool) (rpc.Reply, error) {
		var w W
		if err := decode(raw, &w, checked); err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
		args, useAlt, err := in(ctx, c, w)
		if err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
		// W's arguments are bytes inside W: nothing checked them yet.
		if useAlt {
			if other == nil {
				closeAll(c.FDs)
				return rpc.Reply{}, rpc.Errorf(rpc.CodeForbidden, "%s: not served here", e.Name)
			}
			return other(ctx, c, args, false)
		}
		return inner(ctx, c, args, false)
	}
	return e
}

func newEntry[A, R any](name string, in, out int) Entry {
	return Entry{
		Name:   name,
		Args:   reflect.TypeOf((*A)(nil)).Elem(),
		Reply:  reflect.TypeOf((*R)(nil)).Elem(),
		FDsIn:  in,
		FDsOut: out,
	}
}

var noneType = reflect.TypeOf(None{})

// decode is the one argument decoder: the rpc package's well-formedness
// check (unless raw was checked already, as part of the request frame),
// then msgpack, both failures a bad-request.
func decode[A any](raw []byte, a *A, checked bool) error {
	if _, none := any(a).(*None); none {
		return nil
	}
	if !checked {
		return (&rpc.Call{Body: raw}).Decode(a)
	}
	if err := msgpack.Unmarshal(raw, a); err != nil {
		return rpc.Errorf(rpc.CodeBadRequest, "undecodable %T: %v", a, err)
	}
	return nil
}

// Find returns the table of a protocol among a helper's tables.
func Find(tables []Table, protocol string) (*Table, bool) {
	for i := range tables {
		if tables[i].Protocol == protocol {
			return &tables[i], true
		}
	}
	return nil, false
}

// HandlerOf is the handler of a protocol's table among tables, for a route
// built by hand (tests); a protocol without a table refuses every call.
func HandlerOf(tables []Table, protocol string) rpc.HandlerFunc {
	if t, ok := Find(tables, protocol); ok {
		return t.Handle
	}
	return func(context.Context, *rpc.Call) (rpc.Reply, error) {
		return rpc.Reply{}, rpc.Errorf(rpc.CodeForbidden, "no table for %q", protocol)
	}
}

// Lookup returns the entry for op.
func (t *Table) Lookup(op string) (*Entry, bool) {
	for i := range t.Ops {
		if t.Ops[i].Name == op {
			return &t.Ops[i], true
		}
	}
	return nil, false
}

// MaxFDs is the most fds any op of the table takes: the route's limit, so
// the rpc server refuses more before a handler runs.
func (t *Table) MaxFDs() int {
	n := 0
	for _, e := range t.Ops {
		n = max(n, e.FDsIn)
	}
	return n
}

// Handle serves one call of the table's protocol: it is the route's
// rpc.HandlerFunc. Every refusal closes the fds that came with the call.
func (t *Table) Handle(ctx context.Context, c *rpc.Call) (rpc.Reply, error) {
	req, ok := requestOf(c.Body)
	if !ok {
		if err := c.Decode(&req); err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
	}
	c.Label = req.Op
	if t.Guard != nil {
		if err := t.Guard(ctx, c); err != nil {
			closeAll(c.FDs)
			return rpc.Reply{}, err
		}
	}
	e, ok := t.Lookup(req.Op)
	if !ok {
		closeAll(c.FDs)
		// The caller's string goes back in the error, not into the label
		// every log line of the call carries.
		c.Label = "unknown"
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "unknown op %q on %s", req.Op, t.Protocol)
	}
	if len(c.FDs) != e.FDsIn {
		n := len(c.FDs)
		closeAll(c.FDs)
		switch e.FDsIn {
		case 0:
			return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "%s takes no fds, got %d", e.Name, n)
		case 1:
			return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "%s takes exactly one fd, got %d", e.Name, n)
		}
		return rpc.Reply{}, rpc.Errorf(rpc.CodeBadRequest, "%s takes exactly %d fds, got %d", e.Name, e.FDsIn, n)
	}
	// The args sit inline in the request frame (msgpack.RawMessage), which
	// c.Decode found well-formed to its last byte.
	return e.serve(ctx, c, req.Args, true)
}

// requestOf reads the envelope in the one shape every sluice client
// sends (msgpack of msg.Request: a map of "op", a str, then "args", one
// well-formed value, nothing after it) without msgpack's reflection, a
// tenth of a small call's CPU. Whatever else a body holds is left to
// c.Decode (ok false), so what is accepted, and what Op and Args then
// are, is exactly what msgpack.Unmarshal makes of it (FuzzRequestOf).
func requestOf(b []byte) (req msg.Request, ok bool) {
	const head = "\x82\xa2op"
	if len(b) < len(head) || string(b[:len(head)]) != head {
		return req, false
	}
	b = b[len(head):]
	if len(b) == 0 {
		return req, false
	}
	var n, off int
	switch c := b[0]; {
	case c >= 0xa0 && c <= 0xbf: // fixstr
		n, off = int(c&0x1f), 1
	case c == 0xd9 && len(b) >= 2: // str8
		n, off = int(b[1]), 2
	default:
		return req, false
	}
	if len(b) < off+n {
		return req, false
	}
	op := b[off : off+n]
	b = b[off+n:]
	const args = "\xa4args"
	if len(b) < len(args) || string(b[:len(args)]) != args {
		return req, false
	}
	b = b[len(args):]
	if rpc.CheckMsgpack(b) != nil {
		return req, false
	}
	req.Op = string(op)
	if b[0] != 0xc0 { // msgpack leaves a nil RawMessage nil
		req.Args = append(msgpack.RawMessage(nil), b...)
	}
	return req, true
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
