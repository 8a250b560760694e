package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"sluice/msg"
)

const recordingsSynopsis = "recordings [list] [--user U] [--machine M] [--since T] [--until T] [--live] [--json] | " +
	"recordings show ID | recordings play ID [--speed N] [--max-idle D] | recordings export ID [-o FILE] | recordings verify ID"

func runRecordings(ctx context.Context, g *globals, args []string) error {
	fs := flags("recordings", recordingsSynopsis, g)
	asJSON := fs.Bool("json", false, "print JSON")
	user := fs.String("user", "", "list: only recordings of this sluice user or unix account")
	machine := fs.String("machine", "", "list: only recordings on this machine")
	since := fs.String("since", "", "list: started at or after T (RFC 3339, or a duration ago such as 24h)")
	until := fs.String("until", "", "list: started at or before T (RFC 3339, or a duration ago)")
	live := fs.Bool("live", false, "list: only recordings still being written")
	speed := fs.Float64("speed", 1, "play: speed factor (2: twice as fast)")
	maxIdle := fs.Duration("max-idle", 0, "play: longest pause between two outputs (0: as recorded)")
	outFile := fs.String("o", "", "export: write to FILE instead of standard output")
	verb, rest := splitVerb(args)
	if err := parse(fs, g, valuedFlagsFirst(fs, rest)); err != nil {
		return err
	}
	if verb == "" {
		verb = "list"
	}
	one := func() (string, error) {
		if fs.NArg() != 1 {
			return "", usageErr("want: recordings %s ID", verb)
		}
		return fs.Arg(0), nil
	}
	switch verb {
	case "list":
		if fs.NArg() > 0 {
			return usageErr("list takes no arguments")
		}
		q := msg.RecList{User: *user, Machine: *machine, Live: *live}
		var err error
		if q.Since, err = parseWhen(*since); err != nil {
			return usageErr("--since: %v", err)
		}
		if q.Until, err = parseWhen(*until); err != nil {
			return usageErr("--until: %v", err)
		}
		var rep msg.RecListReply
		if _, err := request(ctx, g, msg.ProtoAdminToRecord, msg.OpRecList, q, &rep, 0); err != nil {
			return err
		}
		if *asJSON {
			if rep.Recordings == nil {
				rep.Recordings = []msg.Recording{}
			}
			return printJSON(g.out, rep.Recordings)
		}
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tUNIX USER\tMACHINE\tSTARTED\tSIZE\tINPUT\tLIVE")
		for _, r := range rep.Recordings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%v\t%v\n", r.ID, r.Requester, r.UnixUser, r.Machine,
				time.UnixMilli(r.Started).UTC().Format(time.RFC3339), r.Size, r.Input, r.Live)
		}
		if rep.Truncated {
			fmt.Fprintf(tw, "(only the newest %d; narrow with --user, --machine, --since)\n", msg.MaxRecList)
		}
		return tw.Flush()
	case "verify", "show":
		id, err := one()
		if err != nil {
			return err
		}
		var v msg.RecVerifyReply
		if _, err := request(ctx, g, msg.ProtoAdminToRecord, msg.OpRecVerify, msg.RecVerify{ID: id}, &v, 0); err != nil {
			return err
		}
		var info msg.Recording
		if verb == "show" {
			f, rec, err := openRecording(ctx, g, id)
			if err != nil {
				return err
			}
			f.Close()
			info = rec
		}
		if *asJSON {
			if verb == "show" {
				err = printJSON(g.out, map[string]any{"recording": info, "verify": v})
			} else {
				err = printJSON(g.out, v)
			}
		} else {
			if verb == "show" {
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "id\t%s\nuser\t%s\nunix user\t%s\nmachine\t%s\nstarted\t%s\nlast write\t%s\nsize\t%d\nsize (cols x rows)\t%dx%d\ninput recorded\t%v\nlive\t%v\n",
					info.ID, info.Requester, info.UnixUser, info.Machine,
					time.UnixMilli(info.Started).UTC().Format(time.RFC3339), time.UnixMilli(info.Modified).UTC().Format(time.RFC3339),
					info.Size, info.Width, info.Height, info.Input, info.Live)
				tw.Flush()
			}
			fmt.Fprintf(g.out, "%s: %s: %s\n", id, v.State, v.Detail)
		}
		if err == nil && v.State != msg.RecIntact && v.State != msg.RecLive {
			return errSilent
		}
		return err
	case "export":
		id, err := one()
		if err != nil {
			return err
		}
		f, _, err := openRecording(ctx, g, id)
		if err != nil {
			return err
		}
		defer f.Close()
		var w io.Writer = g.raw
		if *outFile != "" {
			out, err := os.OpenFile(*outFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			defer out.Close()
			w = out
		}
		if _, err := io.Copy(w, f); err != nil {
			return fmt.Errorf("export %s: %w", id, err)
		}
		if *outFile != "" {
			fmt.Fprintf(g.err, "exported %s to %s (asciicast v2; asciinema play %s)\n", id, *outFile, *outFile)
		}
		return nil
	case "play":
		id, err := one()
		if err != nil {
			return err
		}
		if *speed <= 0 {
			return usageErr("--speed must be above 0")
		}
		f, _, err := openRecording(ctx, g, id)
		if err != nil {
			return err
		}
		defer f.Close()
		return play(ctx, f, g.raw, *speed, *maxIdle)
	}
	return usageErr("unknown recordings verb %q (list, show, play, export, verify)", verb)
}

// openRecording asks the recording helper for a read-only fd of one
// recording.
func openRecording(ctx context.Context, g *globals, id string) (*os.File, msg.Recording, error) {
	var rep msg.RecOpenReply
	fds, err := request(ctx, g, msg.ProtoAdminToRecord, msg.OpRecOpen, msg.RecOpen{ID: id}, &rep, 1)
	if err != nil {
		return nil, rep.Recording, err
	}
	return fds[0], rep.Recording, nil
}

// play writes a recording's output events to w at their recorded pace,
// divided by speed, pauses capped at maxIdle: what `asciinema play` does.
// The bytes go to the terminal as they were recorded.
func play(ctx context.Context, r io.Reader, w io.Writer, speed float64, maxIdle time.Duration) error {
	br := bufio.NewReaderSize(r, 64<<10)
	if _, err := br.ReadSlice('\n'); err != nil {
		return fmt.Errorf("play: no header: %w", err)
	}
	start := time.Now()
	var shift time.Duration // idle time cut out so far
	last := time.Duration(0)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var ev [3]json.RawMessage
			var t float64
			var kind, data string
			if json.Unmarshal(line, &ev) == nil && json.Unmarshal(ev[0], &t) == nil && json.Unmarshal(ev[1], &kind) == nil && kind == "o" &&
				json.Unmarshal(ev[2], &data) == nil {
				at := time.Duration(t/speed*float64(time.Second)) - shift
				if maxIdle > 0 && at-last > maxIdle {
					shift += at - last - maxIdle
					at = last + maxIdle
				}
				last = at
				if d := time.Until(start.Add(at)); d > 0 {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(d):
					}
				}
				if _, err := io.WriteString(w, data); err != nil {
					return err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parseWhen reads RFC 3339 or a duration before now; "" is 0 (no bound).
func parseWhen(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UnixMilli(), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is neither RFC 3339 nor a duration such as 24h", s)
	}
	return time.Now().Add(-d).UnixMilli(), nil
}

// valuedFlagsFirst is flagsFirst for a command with flags that take a
// value ("export ID -o FILE"): such a flag keeps the word after it.
func valuedFlagsFirst(fs *flag.FlagSet, args []string) []string {
	var fl, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		fl = append(fl, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && i+1 < len(args) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				fl = append(fl, args[i+1])
				i++
			}
		}
	}
	return append(fl, pos...)
}
