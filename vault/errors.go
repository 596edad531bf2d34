package vault

import (
	"errors"
	"fmt"
	"github.com/agentvault/agentvault/storage"
)

// Sentinel errors callers branch on with errors.Is; httpapi maps each to
// one status.
var (
	ErrInvalid         = errors.New("invalid input")
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflict")
	ErrForbidden       = errors.New("forbidden")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrTooLarge        = errors.New("too large")
)

// Error is a domain error with a machine-readable code and a message for a
// person. Messages name fields and records, never values.
type Error struct {
	Kind    error  // one of the sentinels above
	Code    string // snake_case, stable
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap lets errors.Is match the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func invalid(code, format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Code: code, Message: fmt.Sprintf(format, args...)}
}

func notFound(code, format string, args ...any) error {
	return &Error{Kind: ErrNotFound, Code: code, Message: fmt.Sprintf(format, args...)}
}

func conflict(code, format string, args ...any) error {
	return &Error{Kind: ErrConflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Storage errors, as the store reports them.
var (
	// ErrUnavailable reports that storage cannot take or give data now.
	ErrUnavailable = storage.ErrUnavailable
	// ErrStorageFull reports a write refused because the disk is down to
	// its reserve; nothing was stored, and it passes once space returns.
	ErrStorageFull = storage.ErrStorageFull
	// ErrTxnTooBig reports a write larger than the store takes at once.
	ErrTxnTooBig = storage.ErrTooBig
)
