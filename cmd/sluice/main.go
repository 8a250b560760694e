// Command sluice is the embedded runner: `sluice run` starts the whole
// suite on a machine without systemd, `sluice manifest` writes the build
// manifest for a directory of binaries.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"sluice/internal/batchlog"
	"sluice/runner"
	"sluice/suite"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  sluice run [--config FILE] [--runtime-dir DIR] [--bin-dir DIR] [--state-dir DIR]
  sluice manifest BINDIR [OUT]     write build-ids.json (default BINDIR/build-ids.json)
  sluice config                    print the embedded default config
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "manifest":
		os.Exit(manifest(os.Args[2:]))
	case "config":
		c, err := runner.DefaultConfigJSON()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(c)
	default:
		usage()
	}
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	config := fs.String("config", "", "JSON config (default: the embedded one, see `sluice config`)")
	runtimeDir := fs.String("runtime-dir", runner.DefaultRuntimeDir(), "sockets, build-ids.json, credentials")
	binDir := fs.String("bin-dir", exeDir(), "directory of the helper binaries")
	stateDir := fs.String("state-dir", runner.DefaultStateDir(), "units' state and generated keys")
	debug := fs.Bool("debug", false, "debug logging")
	fs.Parse(args)
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	// Every unit's lines pass through here, one per helper call: batched,
	// so whoever reads the runner's stderr is woken per batch, not per call.
	logw := batchlog.New(os.Stderr, 20*time.Millisecond)
	defer logw.Flush()
	log := slog.New(batchlog.FlushOnWarn(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}), logw))

	var cfg *runner.Config
	var err error
	if *config != "" {
		cfg, err = runner.LoadConfig(*config)
	} else {
		cfg, err = runner.DefaultConfig()
	}
	if err != nil {
		log.Error("sluice: config", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = runner.Run(ctx, runner.Options{
		Config: cfg, RuntimeDir: *runtimeDir, BinDir: *binDir, StateDir: *stateDir, Log: log,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice: %v\n", err)
		return 1
	}
	return 0
}

func manifest(args []string) int {
	if len(args) < 1 || len(args) > 2 {
		usage()
	}
	out := filepath.Join(args[0], "build-ids.json")
	if len(args) == 2 {
		out = args[1]
	}
	m, err := suite.BuildManifest(args[0])
	if err == nil {
		err = m.Write(out)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice manifest: %v\n", err)
		return 1
	}
	return 0
}

// exeDir is the directory of this executable: bin/ beside the helpers.
func exeDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}
