// Package domainerr holds the typed outcomes of Tollgate's decisions: the
// errors every domain's decide functions return (not found, already
// exists, invalid with the field named, wrong state, …). They are defined
// below every domain so each can use them, and handlers map them to HTTP
// statuses in one place.
package domainerr

import (
	"errors"
	"fmt"
)

// Domain outcomes. Handlers map them to HTTP statuses in one place.
var (
	// ErrNotFound: the aggregate does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the aggregate exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalid: the command is not acceptable as given.
	ErrInvalid = errors.New("invalid")
	// ErrAlreadyClaimed: another executor claimed (or finished) the
	// completion first. The caller drops its copy of the work.
	ErrAlreadyClaimed = errors.New("already claimed")
	// ErrWrongState: the aggregate is not in a state that allows the command.
	ErrWrongState = errors.New("wrong state")
	// ErrRevoked: the API key was revoked.
	ErrRevoked = errors.New("revoked")
)

// ValidationError names the field that made a command invalid.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Message) }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func Invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrClaimLost: the executor's claim was ended by someone else (a reaper
// found its lease expired: it had stopped renewing it) before it recorded
// an outcome. Its work is not recorded and not billed; the stream already
// holds the run's one outcome (abandoned, or requeued for a retry).
var ErrClaimLost = errors.New("claim lost")
