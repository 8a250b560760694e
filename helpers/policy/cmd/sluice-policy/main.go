// Command sluice-policy is the policy helper: it decides, from the policy
// file, who may open which shell, and gets allowed shells from the shell
// helper. See package sluice/helpers/policy and docs/policy.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"sluice/helpers/policy"
	"sluice/internal/confine"
	"sluice/internal/gateway"
	"sluice/internal/grant"
	"sluice/internal/helper"
	"sluice/internal/optable"
	"sluice/internal/revoke"
	"sluice/msg"
	"sluice/rpc"
	"sluice/suite"
)

const (
	protocol      = msg.ProtoWebToPolicy
	shellProtocol = msg.ProtoPolicyToShell
)

func main() {
	var f helper.Flags
	f.Register(flag.CommandLine)
	policyFile := flag.String("policy", policy.DefaultFile, "policy file")
	grantKey := flag.String("grant-key", helper.Credential("grant.key"), "grant key file, 32 bytes (default $CREDENTIALS_DIRECTORY/grant.key)")
	revocationDir := flag.String("revocation-dir", "", "directory of the revocation list auth publishes ("+revoke.DefaultDir+" under systemd), checked on every call; empty: no revocation check")
	var fleet gateway.Flags
	fleet.Register(flag.CommandLine)
	check := flag.Bool("check", false, "parse the policy file, print its rules and exit (0 if it is valid)")
	flag.Parse()
	log := helper.Logger(msg.Policy)

	pol, err := policy.Load(*policyFile)
	if *check {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, r := range pol.Rules {
			fmt.Println(r)
		}
		for _, a := range pol.Audits {
			fmt.Println(a)
		}
		return
	}
	if err != nil {
		helper.Fatal(log, "policy file", err)
	}
	if *grantKey == "" {
		helper.Fatal(log, "no grant key", errors.New("set --grant-key or $CREDENTIALS_DIRECTORY with grant.key"))
	}
	key, err := grant.LoadKey(*grantKey)
	if err != nil {
		helper.Fatal(log, "grant key", err)
	}
	shell, err := suite.Client(msg.Policy, shellProtocol)
	if err != nil {
		helper.Fatal(log, "shell client", err)
	}
	ptystore, err := suite.Client(msg.Policy, msg.ProtoPolicyToPtyStore)
	if err != nil {
		helper.Fatal(log, "ptystore client", err)
	}
	h := &policy.Handler{Key: key, Policy: pol, Shell: shell, PtyStore: ptystore, Log: log}
	var read []string
	if *revocationDir != "" {
		h.Revoked = revoke.NewChecker(*revocationDir)
		read = append(read, *revocationDir)
	} else {
		log.Warn("policy: no --revocation-dir: revoked grants are accepted until they expire")
	}
	tables := h.Tables()
	ad, err := fleet.Adapter(key, gateway.PolicyOps, log)
	if err != nil {
		helper.Fatal(log, "fleet", err)
	}
	if ad != nil {
		web, _ := optable.Find(tables, protocol)
		tables = append(tables, ad.Table(msg.ProtoGatewayToPolicy, web))
	}
	routes, err := f.Routes(msg.Policy, tables...)
	if err != nil {
		helper.Fatal(log, "routes", err)
	}
	confine.Helper(log, confine.Profile{Name: msg.Policy, Read: read, Listen: f.Listen})
	ctx, cancel := helper.Context()
	defer cancel()
	if err := f.Serve(ctx, f.Server(msg.Policy, log, routes...), rpc.ActivationFiles()); err != nil {
		helper.Fatal(log, "serve", err)
	}
}
