// Command sluicectl is the admin CLI: enroll users, list and end
// sessions, audit what each helper may do, and speak a helper's protocol
// by hand for debugging.
//
// Exit status: 0 success, 1 the operation failed (a helper refused or
// could not be reached, or an audit found a problem), 2 bad usage, 3 the
// user or passkey named does not exist (users, passkeys).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: sluicectl [global flags] COMMAND [flags] [args]

Commands:
  enroll USER            create a one-time passkey enrollment link for USER
                         (--unless-enrolled: only if USER has no passkey yet)
  sessions [list]        list live shell sessions, on a fleet gateway every
                         host's too (HOST column; --host NAME: one host)
  sessions end [HOST/]ID end a session (hangs up its shell), on a fleet
                         host through its relay (or --host NAME)
  users [list]           list sluice users: state, passkeys, last sign-in
  users disable USER     refuse USER's sign-ins and revoke their grants at once
  users enable USER      let USER sign in again (older grants stay revoked)
  users remove USER      delete USER and their passkeys, revoke their grants
                         (disable, remove: --end-sessions also ends their sessions)
  passkeys list USER     list USER's passkeys (ID, name, created, last used)
  passkeys revoke USER ID  delete a passkey and revoke the grants it gave
                         (--end-sessions also ends USER's sessions)
  audit [HELPER...]      per helper: socket, mode, group, accepted callers,
                         exposure score, AppArmor profile, build IDs, ops
                         (--ops: only the op tables, with argument and reply
                         fields and fds; needs no installation)
  call HELPER OP [JSON]  send one request by hand and print the reply
  policy check FILE      parse a policy file, print its rules and the live
                         sessions it would end or detach (--offline: parse only)
  policy apply FILE      install it (--to, default /etc/sluice/policy) and have
                         ptystore end or detach what it no longer allows
  recordings [list]      list session recordings (--user, --machine, --since,
                         --until, --live)
  recordings show ID     a recording's header, size and seal check
  recordings play ID     play it in this terminal (--speed, --max-idle)
  recordings export ID   write the .cast file (-o FILE), for asciinema play
  recordings verify ID   check its seals: intact, live, cut or altered
  manifest               print the build manifest (build-ids.json)
  keygen FILE            write a new 32-byte key (mode 0600) to FILE
                         (--unless-exists: keep one that is there)
  hosts [list]           the fleet's hosts (docs/fleet.md)
  hosts add NAME ADDRESS pin a host's key, add it, print the lines for the host
  hosts check NAME       reach the host's relay over ssh
  hosts remove NAME      forget a host and its pinned key

Global flags:
  --runtime-dir DIR      helper sockets (default $SLUICE_RUNTIME_DIR or /run/sluice)
  --manifest FILE        build manifest (default $SLUICE_MANIFEST, then
                         RUNTIME_DIR/build-ids.json, then beside sluicectl)
  --timeout DURATION     per call (default 10s)

Run "sluicectl COMMAND --help" for a command's flags. Most commands take
--json for output that scripts can read.
`

// errUsage marks an error as bad usage (exit 2).
type errUsage struct{ error }

func usageErr(format string, a ...any) error { return errUsage{fmt.Errorf(format, a...)} }

type command struct {
	run func(ctx context.Context, g *globals, args []string) error
}

type globals struct {
	timeout time.Duration
	out     io.Writer
	err     io.Writer
	// raw is standard output unescaped, for the one thing meant to drive
	// the terminal: a recording played back (and an export's bytes).
	raw io.Writer
}

var commands = map[string]command{
	"enroll":     {runEnroll},
	"sessions":   {runSessions},
	"users":      {runUsers},
	"passkeys":   {runPasskeys},
	"audit":      {runAudit},
	"call":       {runCall},
	"policy":     {runPolicy},
	"recordings": {runRecordings},
	"manifest":   {runManifest},
	"keygen":     {runKeygen},
	"hosts":      {runHosts},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	out, errw := newEscaper(stdout), newEscaper(stderr)
	defer out.Flush()
	defer errw.Flush()
	return runEscaped(args, out, errw)
}

func runEscaped(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluicectl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	runtimeDir := fs.String("runtime-dir", "", "")
	manifest := fs.String("manifest", "", "")
	timeout := fs.Duration("timeout", 10*time.Second, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return 2
	}
	if *runtimeDir != "" {
		os.Setenv("SLUICE_RUNTIME_DIR", *runtimeDir)
	}
	if *manifest != "" {
		os.Setenv("SLUICE_MANIFEST", *manifest)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if rest[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "sluicectl: unknown command %q\n\n%s", rest[0], usage)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	raw := stdout
	if e, ok := stdout.(*escaper); ok {
		raw = e.w
	}
	err := cmd.run(ctx, &globals{timeout: *timeout, out: stdout, err: stderr, raw: raw}, rest[1:])
	var ue errUsage
	var nf errNotFound
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sluicectl %s: %v\n", rest[0], ue.error)
		return 2
	case errors.As(err, &nf):
		fmt.Fprintf(stderr, "sluicectl %s: %s\n", rest[0], nf.Error())
		return exitNotFound
	case errors.Is(err, errSilent):
		return 1
	default:
		fmt.Fprintf(stderr, "sluicectl %s: %s\n", rest[0], err.Error())
		return 1
	}
}

// errSilent: failed, and the output already said why.
var errSilent = errors.New("failed")

// flags returns a subcommand's flag set whose --help prints help and
// whose parse errors count as usage errors.
func flags(name, synopsis string, g *globals) *flag.FlagSet {
	fs := flag.NewFlagSet("sluicectl "+name, flag.ContinueOnError)
	fs.SetOutput(g.err)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sluicectl %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses a subcommand's flags; --help prints to stdout and ends the
// command with status 0, other flag errors are usage errors.
func parse(fs *flag.FlagSet, g *globals, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(g.out)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	if err := fs.Parse(args); err != nil {
		return errUsage{err}
	}
	return nil
}

// splitVerb takes a leading verb ("sessions end ID", "policy check
// FILE") off args, so flags may come after it.
func splitVerb(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
