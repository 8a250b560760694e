package hostile

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the "other user" process: run with
// HOSTILE_CHILD set, it does one thing as whatever uid it was started with
// and prints the result as one JSON line.
const childEnv = "HOSTILE_CHILD"

// childResult is what a child reports.
type childResult struct {
	Reply Reply  `json:"reply"`
	Err   string `json:"err"`
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	// 2,000 held connections need more than the usual 1,024 fds.
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 8192 {
		rl.Cur = min(8192, rl.Max)
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	code := m.Run()
	cleanupShared()
	os.Exit(code)
}

// childMain: "call" sends $REQ (hex) to $SOCK and prints the parsed reply;
// "forge" sends $REQ with SCM_CREDENTIALS claiming $FORGE_PID/$FORGE_UID
// and prints sendmsg's error.
func childMain(mode string) int {
	req, _ := decodeHex(os.Getenv("REQ"))
	var res childResult
	switch mode {
	case "call":
		a, err := Exchange(os.Getenv("SOCK"), req)
		if err != nil {
			res.Err = err.Error()
		} else {
			res.Reply = a.Parse()
			a.CloseFDs()
		}
	case "forge":
		c, err := Dial(os.Getenv("SOCK"))
		if err != nil {
			res.Err = err.Error()
			break
		}
		pid, _ := strconv.Atoi(os.Getenv("FORGE_PID"))
		uid, _ := strconv.Atoi(os.Getenv("FORGE_UID"))
		oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(pid), Uid: uint32(uid), Gid: uint32(uid)})
		if err := c.Write(req, oob...); err != nil {
			res.Err = err.Error()
		} else {
			c.CloseWrite()
			res.Reply = c.ReadAll().Parse()
		}
		c.Close()
	default:
		return 2
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func decodeHex(s string) ([]byte, error) { return hex.DecodeString(s) }

var (
	pubOnce sync.Once
	pubDir  string
	pubExe  string
	pubErr  error
)

// publicDir is a directory every uid can enter, holding a copy of the
// test binary that every uid can run (go test builds it under a directory
// only root may enter).
func publicDir(t testing.TB) (dir, exe string) {
	t.Helper()
	pubOnce.Do(func() {
		pubDir, pubErr = os.MkdirTemp("", "sluice-hostile-")
		if pubErr != nil {
			return
		}
		if pubErr = os.Chmod(pubDir, 0o755); pubErr != nil {
			return
		}
		var b []byte
		if b, pubErr = os.ReadFile(os.Args[0]); pubErr != nil {
			return
		}
		pubExe = filepath.Join(pubDir, "hostile.test")
		pubErr = os.WriteFile(pubExe, b, 0o755)
	})
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	return pubDir, pubExe
}

func cleanupShared() {
	stopHelpers()
	if pubDir != "" {
		os.RemoveAll(pubDir)
	}
}

// asUser runs the test binary in a child mode as uid:uid.
func asUser(t *testing.T, uid uint32, mode string, env ...string) childResult {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("needs root to start a process as another uid (CI runs as root)")
	}
	_, exe := publicDir(t)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+mode)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s as uid %d: %v: %s", mode, uid, err, out)
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child %s: %q: %v", mode, strings.TrimSpace(string(out)), err)
	}
	return res
}
