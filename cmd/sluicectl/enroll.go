package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"sluice/internal/optable"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

// request sends one admin request (want: the fds its reply carries, the
// caller's to close) and decodes the reply.
func request(ctx context.Context, g *globals, protocol, op string, args, reply any, want int) ([]*os.File, error) {
	fds, err := requestBare(ctx, g, protocol, op, args, reply, want)
	var ce clientErr
	if errors.As(err, &ce) {
		return nil, explain(ce.error, ce.path)
	}
	return fds, err
}

// clientErr is a call's error with the socket it went to, for explain.
type clientErr struct {
	error
	path string
}

// requestBare is request without explain's hints: for a call whose
// refusal comes from further away (a fleet host) than the socket.
func requestBare(ctx context.Context, g *globals, protocol, op string, args, reply any, want int) ([]*os.File, error) {
	cl, err := suite.Client(msg.Admin, protocol)
	if err != nil {
		return nil, err
	}
	cl.Timeout = g.timeout
	fds, err := optable.CallInto(ctx, cl, op, args, nil, reply, want)
	if err != nil {
		return nil, clientErr{err, cl.Path}
	}
	return fds, nil
}

// explain turns the errors an admin meets most into what to do about them.
func explain(err error, path string) error {
	switch rpc.CodeOf(err) {
	case rpc.CodeForbidden:
		return fmt.Errorf("%w (the helper's --allow list does not include you; try as root)", err)
	case "":
		if strings.Contains(err.Error(), "no such file") || strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("%w (is the helper's socket unit running? systemctl status %s)", err,
				strings.TrimSuffix(lastElem(path), ".sock"))
		}
		if strings.Contains(err.Error(), "permission denied") {
			return fmt.Errorf("%w (the socket's group does not include you; try as root)", err)
		}
	}
	return err
}

func lastElem(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return "sluice-" + p[i+1:]
	}
	return p
}

func runEnroll(ctx context.Context, g *globals, args []string) error {
	fs := flags("enroll", "enroll [--ttl DURATION] [--base-url URL] [--unless-enrolled] [--json] USER", g)
	ttl := fs.Duration("ttl", 0, "lifetime of the link (default: the auth helper's, 24h)")
	base := fs.String("base-url", "http://localhost:8080", "where users reach the frontend")
	unless := fs.Bool("unless-enrolled", false, "make no link if USER has a passkey already; say so instead")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, g, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("want exactly one USER")
	}
	var rep msg.EnrollReply
	if _, err := request(ctx, g, msg.ProtoAdminToAuth, msg.OpEnroll,
		msg.Enroll{User: fs.Arg(0), TTLSeconds: int64(*ttl / time.Second), UnlessEnrolled: *unless}, &rep, 0); err != nil {
		return err
	}
	if rep.Token == "" {
		if *asJSON {
			return printJSON(g.out, map[string]any{"user": rep.User, "passkeys": rep.Passkeys, "url": *base})
		}
		fmt.Fprintf(g.out, "%s has %d passkey(s); sign in at %s\n", rep.User, rep.Passkeys, *base)
		return nil
	}
	link := strings.TrimSuffix(*base, "/") + "/enroll#" + rep.Token
	expires := time.UnixMilli(rep.Expires).UTC()
	if *asJSON {
		return printJSON(g.out, map[string]any{"user": rep.User, "url": link, "token": rep.Token,
			"expires": expires.Format(time.RFC3339)})
	}
	fmt.Fprintln(g.out, link)
	fmt.Fprintf(g.err, "one-time link for %s, valid until %s\n", rep.User, expires.Format(time.RFC3339))
	return nil
}
