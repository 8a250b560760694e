// Package tickettest makes session tickets for tests that put sessions in
// ptystore by hand, as policy would have given them with the fd.
package tickettest

import (
	"os"
	"testing"
	"time"

	"sluice/internal/grant"
	"sluice/internal/ticket"
	"sluice/msg"
)

// For returns a ticket for info and f, signed with key and good for
// ticket.Lifetime from now.
func For(t testing.TB, key grant.Key, info msg.SessionInfo, f *os.File) msg.SessionTicket {
	t.Helper()
	fd, err := ticket.Identify(f)
	if err != nil {
		t.Fatalf("tickettest: %v", err)
	}
	tk, err := ticket.Sign(key, info, fd, time.Now().Add(ticket.Lifetime))
	if err != nil {
		t.Fatalf("tickettest: %v", err)
	}
	return tk
}
