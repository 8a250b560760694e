package main

import (
	"context"
)

func runPolicy(ctx context.Context, g *globals, args []string) error {
	return usageErr("policy check: not available yet")
}
