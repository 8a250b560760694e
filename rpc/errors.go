package rpc

import (
	"errors"
	"fmt"
	"strings"
)

// Errors a caller can test for with errors.Is.
var (
	// ErrHandshake: the peer's intent or build ID was not the expected one,
	// or the server closed the connection without sending its own lines
	// (which is how a server refuses a client's handshake).
	ErrHandshake = errors.New("rpc: handshake refused")
	// ErrBusy: the server was at its connection cap and turned the call away.
	ErrBusy = errors.New("rpc: server busy")
	// ErrFrameTooLarge: a length prefix above the receiving side's limit.
	ErrFrameTooLarge = errors.New("rpc: frame too large")
	// ErrTruncated: the connection ended in the middle of a line or frame.
	ErrTruncated = errors.New("rpc: truncated")
	// ErrTimeout: the call's deadline passed.
	ErrTimeout = errors.New("rpc: deadline exceeded")
	// ErrCredentials: the kernel attached no credentials, or they changed
	// during the call (the connected fd is being used by another process).
	ErrCredentials = errors.New("rpc: caller credentials missing or changed")
	// ErrForbidden matches a RemoteError with code "forbidden": the server's
	// peer policy refused the kernel-reported caller.
	ErrForbidden = errors.New("rpc: forbidden by peer policy")
	// ErrInUse: Listen found a live socket, or something other than a
	// socket, at its path, and left it there.
	ErrInUse = errors.New("rpc: socket path in use")
)

// Code words with a meaning at the rpc layer. Helpers add their own (see
// package msg); any lowercase word made of [a-z-] is a valid code.
const (
	CodeBadRequest = "bad-request"
	CodeForbidden  = "forbidden"
	CodeInternal   = "internal"
)

// Error is an error a handler returns to have a specific code sent to the
// client. Any other error a handler returns is sent as "internal", with its
// text kept in the server log only.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// Errorf builds an *Error with the given code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// RemoteError is an error frame received from a server.
type RemoteError struct {
	Code string // first word of the frame, before ": "
	Msg  string // the rest
}

func (e *RemoteError) Error() string {
	return "rpc: remote: " + e.Code + ": " + e.Msg
}

// Is makes errors.Is(err, ErrForbidden) true for a forbidden error frame.
func (e *RemoteError) Is(target error) bool {
	return target == ErrForbidden && e.Code == CodeForbidden
}

// parseRemoteError splits an error frame "code: message". A frame without
// a code word is reported with code "error".
func parseRemoteError(text string) *RemoteError {
	code, rest, ok := strings.Cut(text, ": ")
	if !ok || !validCode(code) {
		return &RemoteError{Code: "error", Msg: text}
	}
	return &RemoteError{Code: code, Msg: rest}
}

func validCode(code string) bool {
	if code == "" || len(code) > 32 {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}

// CodeOf returns the code of a *RemoteError or *Error in err's chain, or "".
func CodeOf(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
