package helper

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// contextChild: the test binary re-run as a child that takes Context and
// reports what a signal did to it.
const contextChild = "SLUICE_HELPER_CONTEXT_CHILD"

func TestMain(m *testing.M) {
	if sig := os.Getenv(contextChild); sig != "" {
		ctx, cancel, ready := notifyContext(syscall.SIGINT, syscall.SIGTERM)
		defer cancel()
		<-ready
		os.Stdout.WriteString("ready\n")
		select {
		case <-ctx.Done():
			os.Stdout.WriteString("cancelled\n")
		case <-time.After(10 * time.Second):
			os.Stdout.WriteString("timeout\n")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestContextCancelledBySignal: SIGINT and SIGTERM cancel the context
// instead of ending the process, once the handlers are in place.
func TestContextCancelledBySignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^$")
			cmd.Env = append(os.Environ(), contextChild+"=1")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, _ := out.Read(buf)
			if string(buf[:n]) != "ready\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child said %q before the signal", buf[:n])
			}
			cmd.Process.Signal(sig)
			rest := make([]byte, 64)
			m, _ := out.Read(rest)
			err = cmd.Wait()
			if got := strings.TrimSpace(string(rest[:m])); got != "cancelled" || err != nil {
				t.Fatalf("after %v the child said %q and ended with %v; want cancelled and exit 0", sig, got, err)
			}
		})
	}
}

// TestContextCancel: cancel ends the context without a signal.
func TestContextCancel(t *testing.T) {
	ctx, cancel := Context()
	select {
	case <-ctx.Done():
		t.Fatal("done before cancel")
	default:
	}
	cancel()
	<-ctx.Done()
}
