// Package auth is the passkey helper: it owns the credential store and
// answers the WebAuthn ceremonies for the web frontend ("web to auth") and
// enrollment for admins ("admin to auth"). A successful login yields a
// grant (package grant) that policy and ptystore check on their own.
//
// Registration needs a one-time token an admin made; there is no
// self-service sign-up. Ceremony state between begin and finish travels
// sealed with the caller (package seal), so any process may serve any
// call; what must not happen twice (a token spent, a login challenge used)
// is recorded in the store.
//
// For the frontend: RegisterBeginReply.Options and LoginBeginReply.Options
// are JSON objects {"publicKey": {...}} whose publicKey member is what
// PublicKeyCredential.parseCreationOptionsFromJSON and
// parseRequestOptionsFromJSON take; the credential's toJSON() goes back as
// RegisterFinish.Credential or LoginFinish.Assertion, and State goes back
// byte for byte. tests/softauthn speaks exactly this.
//
// The socket, sluice-auth (one process per connection): "web to auth" from
// the frontend, "admin to auth" from sluicectl (then only uid 0 or the
// --admins list). It holds the credential store, the grant key, the seal
// key, the host grant key of a fleet gateway, and publishes the revocation
// list.
//
// Shape, as every helper: cmd/sluice-auth/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// auth` prints it), then the helper's own files.
package auth
