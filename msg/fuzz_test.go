package msg_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"sluice/msg"
	"sluice/rpc"
)

// decode is how every handler decodes: rpc.Call.Decode, which checks the
// msgpack's length claims before the decoder trusts them. (The bare
// decoder does not: testdata/fuzz/FuzzDecode/oom-length-claim made it
// allocate without bound, which is why the check exists.)
func decode(b []byte, v any) error {
	c := rpc.Call{Body: b}
	return c.Decode(v)
}

// every returns a fresh zero value of every message type, the request
// envelope included. TestFuzzCoversEveryType keeps it complete.
func every() []any {
	return []any{
		new(msg.Request), new(msg.Grant),
		new(msg.RegisterBegin), new(msg.RegisterBeginReply),
		new(msg.RegisterFinish), new(msg.RegisterFinishReply),
		new(msg.LoginBegin), new(msg.LoginBeginReply),
		new(msg.LoginFinish), new(msg.LoginFinishReply),
		new(msg.Enroll), new(msg.EnrollReply),
		new(msg.UserList), new(msg.UserInfo), new(msg.UserListReply), new(msg.UserChange), new(msg.UserChangeReply),
		new(msg.PasskeyList), new(msg.Passkey), new(msg.PasskeyListReply), new(msg.PasskeyRevoke), new(msg.PasskeyRevokeReply),
		new(msg.PasskeyAdd),
		new(msg.CreateShellSession), new(msg.CreateShellSessionReply),
		new(msg.AllowedTargets), new(msg.AllowedTargetsReply), new(msg.Target),
		new(msg.OpenShell), new(msg.OpenShellReply),
		new(msg.SessionInfo), new(msg.SessionTicket),
		new(msg.PtyPut), new(msg.PtyPutReply),
		new(msg.PtyGet), new(msg.PtyGetReply),
		new(msg.PtyList), new(msg.PtyListReply),
		new(msg.PtyDrop), new(msg.PtyDropReply),
		new(msg.PtyShare), new(msg.PtyShareReply),
		new(msg.PtyViewers), new(msg.PtyViewersReply), new(msg.Limits),
		new(msg.AuditScope), new(msg.AuditScopeReply), new(msg.PtyAuditList), new(msg.PtyAuditGet),
		new(msg.HangupSession), new(msg.HangupSessionReply),
		new(msg.RecordSpec), new(msg.RecordSession), new(msg.RecordSessionReply), new(msg.RecList), new(msg.Recording),
		new(msg.RecListReply), new(msg.RecOpen), new(msg.RecOpenReply), new(msg.RecVerify), new(msg.RecVerifyReply),
		new(msg.CheckAudit), new(msg.CheckAuditReply),
		new(msg.CheckSessions), new(msg.SessionCheck), new(msg.CheckSessionsReply), new(msg.Verdict),
		new(msg.PtyRecheck), new(msg.PtyRecheckReply), new(msg.RevokedSession),
		// the fleet (msg/fleet.go)
		new(msg.HostGrant), new(msg.HostGrantRequest), new(msg.HostGrantReply), new(msg.HostAdminGrantRequest),
		new(msg.GatewayKey), new(msg.GatewayKeyReply), new(msg.GatewayArgs),
		new(msg.FleetCall), new(msg.FleetOpenReply), new(msg.FleetHost), new(msg.FleetHosts), new(msg.FleetHostsReply),
		new(msg.FleetCheck), new(msg.FleetCheckReply),
		new(msg.RelayRequest), new(msg.RelayReply), new(msg.RelayPing), new(msg.RelayPingReply),
	}
}

// argsOf maps each operation to the type its Args decode into.
var argsOf = map[string]func() any{
	msg.OpRegisterBegin:      func() any { return new(msg.RegisterBegin) },
	msg.OpRegisterFinish:     func() any { return new(msg.RegisterFinish) },
	msg.OpLoginBegin:         func() any { return new(msg.LoginBegin) },
	msg.OpLoginFinish:        func() any { return new(msg.LoginFinish) },
	msg.OpEnroll:             func() any { return new(msg.Enroll) },
	msg.OpUserList:           func() any { return new(msg.UserList) },
	msg.OpUserDisable:        func() any { return new(msg.UserChange) },
	msg.OpUserEnable:         func() any { return new(msg.UserChange) },
	msg.OpUserRemove:         func() any { return new(msg.UserChange) },
	msg.OpPasskeyList:        func() any { return new(msg.PasskeyList) },
	msg.OpPasskeyRevoke:      func() any { return new(msg.PasskeyRevoke) },
	msg.OpPasskeyAdd:         func() any { return new(msg.PasskeyAdd) },
	msg.OpCreateShellSession: func() any { return new(msg.CreateShellSession) },
	msg.OpAllowedTargets:     func() any { return new(msg.AllowedTargets) },
	msg.OpOpenShell:          func() any { return new(msg.OpenShell) },
	msg.OpPtyPut:             func() any { return new(msg.PtyPut) },
	msg.OpPtyGet:             func() any { return new(msg.PtyGet) },
	msg.OpPtyList:            func() any { return new(msg.PtyList) },
	msg.OpPtyDrop:            func() any { return new(msg.PtyDrop) },
	msg.OpPtyShare:           func() any { return new(msg.PtyShare) },
	msg.OpPtyViewers:         func() any { return new(msg.PtyViewers) },
	msg.OpAuditScope:         func() any { return new(msg.AuditScope) },
	msg.OpPtyAuditList:       func() any { return new(msg.PtyAuditList) },
	msg.OpPtyAuditGet:        func() any { return new(msg.PtyAuditGet) },
	msg.OpHangup:             func() any { return new(msg.HangupSession) },
	msg.OpCheckSessions:      func() any { return new(msg.CheckSessions) },
	msg.OpPtyRecheck:         func() any { return new(msg.PtyRecheck) },
	msg.OpRecordSession:      func() any { return new(msg.RecordSession) },
	msg.OpRecList:            func() any { return new(msg.RecList) },
	msg.OpRecOpen:            func() any { return new(msg.RecOpen) },
	msg.OpRecVerify:          func() any { return new(msg.RecVerify) },
	msg.OpCheckAudit:         func() any { return new(msg.CheckAudit) },
	msg.OpHostGrant:          func() any { return new(msg.HostGrantRequest) },
	msg.OpGatewayKey:         func() any { return new(msg.GatewayKey) },
	msg.OpFleetHosts:         func() any { return new(msg.FleetHosts) },
	msg.OpFleetCall:          func() any { return new(msg.FleetCall) },
	msg.OpFleetOpen:          func() any { return new(msg.FleetCall) },
	msg.OpFleetCheck:         func() any { return new(msg.FleetCheck) },
	msg.OpHostAdminGrant:     func() any { return new(msg.HostAdminGrantRequest) },
	msg.OpFleetAdminCall:     func() any { return new(msg.FleetCall) },
	msg.OpRelayPing:          func() any { return new(msg.RelayPing) },
}

// TestFuzzCoversEveryType fails when msg grows a struct type or an Op
// constant the fuzz tables do not know, so new messages cannot slip past
// the decoders' fuzzing.
func TestFuzzCoversEveryType(t *testing.T) {
	fset := token.NewFileSet()
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var structs, ops []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.TypeSpec:
				if _, ok := n.Type.(*ast.StructType); ok && n.Name.IsExported() {
					structs = append(structs, n.Name.Name)
				}
			case *ast.ValueSpec:
				for _, id := range n.Names {
					if strings.HasPrefix(id.Name, "Op") {
						ops = append(ops, id.Name)
					}
				}
			}
			return true
		})
	}
	known := map[string]bool{}
	for _, v := range every() {
		known[reflect.TypeOf(v).Elem().Name()] = true
	}
	for _, s := range structs {
		if s == "Protocol" { // the protocol table, never on the wire
			continue
		}
		if !known[s] {
			t.Errorf("msg.%s is not in every(): add it so its decoder is fuzzed", s)
		}
	}
	// Ops: each constant's value must be in argsOf. The constants are
	// compared by count, as go/ast gives names, not values.
	if len(ops) != len(argsOf) {
		t.Errorf("%d Op constants %v, argsOf has %d: add the new op's argument type", len(ops), ops, len(argsOf))
	}
}

// roundTrip checks that a value decoded from anything encodes to bytes
// that decode to an equal value, and that encoding is then stable.
func roundTrip(t *testing.T, v any) {
	t.Helper()
	b1, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("%T decoded but does not encode: %v", v, err)
	}
	v2 := reflect.New(reflect.TypeOf(v).Elem()).Interface()
	if err := decode(b1, v2); err != nil {
		t.Fatalf("%T: own encoding %x does not decode: %v", v, b1, err)
	}
	b2, err := msgpack.Marshal(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("%T: encoding not stable: %x then %x", v, b1, b2)
	}
	// With omitempty an empty slice is not encoded and comes back nil;
	// both mean "none", so they compare equal here.
	nilEmpty(reflect.ValueOf(v))
	nilEmpty(reflect.ValueOf(v2))
	if !reflect.DeepEqual(v, v2) {
		t.Fatalf("%T: round trip changed the value:\n%#v\n%#v", v, v, v2)
	}
}

// nilEmpty sets every empty slice reachable from v to nil.
func nilEmpty(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			nilEmpty(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				nilEmpty(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 && !v.IsNil() && v.CanSet() {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if v.Type().Elem().Kind() != reflect.Uint8 {
			for i := range v.Len() {
				nilEmpty(v.Index(i))
			}
		}
	}
}

func seeds() [][]byte {
	g := msg.Grant{User: "alice", Issued: 1, Expires: 2, Nonce: make([]byte, 16), MAC: make([]byte, 32)}
	info := msg.SessionInfo{ID: "s1", Owner: "alice", UnixUser: "alice", Machine: msg.HostMachine, Sharing: msg.SharePrivate}
	vals := []any{
		g, info,
		msg.CreateShellSession{Machine: msg.HostMachine, User: "alice", Args: []string{"/bin/sh"}, Env: []string{"TERM=xterm"}, Grant: g},
		msg.OpenShell{Machine: "web1", User: "bob", Requester: "alice"},
		msg.PtyListReply{Sessions: []msg.SessionInfo{info, info}},
		msg.AllowedTargetsReply{Targets: []msg.Target{{User: "root", Machine: msg.HostMachine}, {User: "*", Machine: "web1", Pattern: true}}, Truncated: true},
		msg.PtyGet{Grant: g, ID: "s1", ShareToken: []byte{1, 2}},
		msg.RegisterFinish{Token: "t", State: []byte{1}, Credential: []byte("{}")},
		msg.EnrollReply{User: "alice", Token: "t", Expires: -1},
		map[string]any{"user": 12, "issued": "x", "nonce": "str"},
		map[string]any{"op": 1, "args": []int{1}},
		[]any{"alice", 1, 2},
	}
	var out [][]byte
	for _, v := range vals {
		b, err := msgpack.Marshal(v)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	for op := range argsOf {
		b, _ := msgpack.Marshal(msg.Request{Op: op, Args: out[2]})
		out = append(out, b)
	}
	return append(out, nil, []byte{0xc0}, []byte{0xc1}, []byte{0xdf, 0xff, 0xff, 0xff, 0xff},
		[]byte{0xdd, 0x7f, 0xff, 0xff, 0xff}, []byte{0xc6, 0xff, 0xff, 0xff, 0xf0})
}

// FuzzDecode decodes arbitrary bytes into every message type: no panic,
// no runaway allocation, and whatever decodes survives a round trip.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range every() {
			if decode(b, v) == nil {
				roundTrip(t, v)
			}
		}
	})
}

// FuzzRequest decodes the envelope and then its Args as the op says, the
// two steps every handler takes.
func FuzzRequest(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	ops := slices.Sorted(func(yield func(string) bool) {
		for op := range argsOf {
			if !yield(op) {
				return
			}
		}
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req msg.Request
		if decode(b, &req) != nil {
			return
		}
		roundTrip(t, &req)
		mk, ok := argsOf[req.Op]
		if !ok {
			// Unknown op: handlers refuse it; still, no type may choke.
			mk = argsOf[ops[len(req.Args)%len(ops)]]
		}
		v := mk()
		if decode(req.Args, v) == nil {
			roundTrip(t, v)
		}
	})
}
