// Package record is the recording helper: it sits between the pty a shell
// runs on and the session socket the frontend sees (package termsock),
// writes every byte that passes to an asciicast v2 file before passing it
// on, and seals the file as it
// grows with a keyed BLAKE3 chain only it can compute. It also lists,
// opens and verifies recordings for sluicectl and for auditors. Where the
// bytes are captured, the format and the seals are in docs/recording.md.
//
// The socket, sluice-record (one process per connection, which lives as long
// as the session it records): "shell to record" from the shell helper,
// "admin to record" from sluicectl, "web to record" from the frontend for
// auditors. It holds the recordings directory and the seal key, and asks
// policy ("record to policy") who may audit and hangup ("record to hangup")
// to end a recorded shell.
//
// Shape, as every helper: cmd/sluice-record/main.go (flags, handler, serve),
// handler.go (the op table: per protocol each op, its argument and reply
// types, the fds it takes and gives, its handler; `sluicectl audit --ops
// record` prints it), then the helper's own files.
package record
