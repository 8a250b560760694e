// Package testwire is the wire contract between the runner's tests and
// their service (runner/testdata/testsvc): the hellos, the request and the
// reply, kept in one place so the two sides cannot drift apart.
package testwire

import (
	"strings"

	"sluice/rpc"
)

// Hellos fixed for the tests: no manifest, no hashing, lean start.
var (
	ClientHello = rpc.Hello{Intent: "sluice runner test client", BuildID: strings.Repeat("a", 64)}
	ServerHello = rpc.Hello{Intent: "sluice runner test server", BuildID: strings.Repeat("b", 64)}
)

type Request struct {
	Op   string `msgpack:"op"`
	Name string `msgpack:"name"`
	Data string `msgpack:"data"`
	Poll bool   `msgpack:"poll"`
}

// Info is every answer: what the service sees of its own process.
type Info struct {
	PID           int      `msgpack:"pid"`
	ListenPID     string   `msgpack:"listen_pid"`
	ListenFDs     string   `msgpack:"listen_fds"`
	ListenFDNames string   `msgpack:"listen_fdnames"`
	UID           int      `msgpack:"uid"`
	GID           int      `msgpack:"gid"`
	Groups        []int    `msgpack:"groups"`
	Env           []string `msgpack:"env"`
	GrantKeyLen   int      `msgpack:"grant_key_len"`
	GrantKeyErr   string   `msgpack:"grant_key_err"`
	Stored        []string `msgpack:"stored"`
	Data          string   `msgpack:"data"`
	FDLinks       []string `msgpack:"fd_links"` // what each of its open fds is, at the call
}

// Getenv is the value of k in the service's environment, or "".
func (in Info) Getenv(k string) string {
	for _, kv := range in.Env {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v
		}
	}
	return ""
}
