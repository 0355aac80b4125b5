// Package commands holds Tollgate's decisions: the state of each aggregate
// (account, API key, completion) folded from its events, the decide
// functions that turn a command and that state into new events (or a typed
// error), and the Service that loads, decides and appends.
//
// Decide functions are pure: no clock, no randomness, no I/O. The package
// imports no driver; the event store is an interface defined here.
package commands

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

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}
