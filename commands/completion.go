package commands

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tollgate/tollgate/events"
)

// CompletionStatus is where a completion request stands.
type CompletionStatus string

// Completion statuses.
const (
	StatusNone      CompletionStatus = ""
	StatusQueued    CompletionStatus = "queued"
	StatusRunning   CompletionStatus = "running"
	StatusSucceeded CompletionStatus = "succeeded"
	StatusFailed    CompletionStatus = "failed"
)

// Completion is a completion request's state, folded from its stream.
type Completion struct {
	ID             string
	AccountID      string
	KeyID          string
	Model          string
	Mode           string
	Request        json.RawMessage
	Status         CompletionStatus
	Executor       string
	LeaseExpiresAt time.Time
	RequestedAt    time.Time
	StartedAt      time.Time
	FinishedAt     time.Time
	Succeeded      *events.CompletionSucceeded
	Failed         *events.CompletionFailed
	Version        int64
}

// Finished reports whether the completion has its final outcome.
func (c Completion) Finished() bool {
	return c.Status == StatusSucceeded || c.Status == StatusFailed
}

// CompletionStream returns the stream id of a completion.
func CompletionStream(completionID string) string { return events.StreamCompletion + completionID }

// FoldCompletion rebuilds a completion from its events.
func FoldCompletion(evs []events.Envelope) (Completion, error) {
	var c Completion
	return c.Apply(evs...)
}

// Apply returns the state after evs, which continue c's stream.
func (c Completion) Apply(evs ...events.Envelope) (Completion, error) {
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return c, err
		}
		switch d := d.(type) {
		case events.CompletionRequested:
			c.ID, c.AccountID, c.KeyID, c.Model, c.Mode, c.Request = d.CompletionID, d.AccountID, d.KeyID, d.Model, d.Mode, d.Request
			c.Status, c.RequestedAt = StatusQueued, e.OccurredAt
		case events.CompletionStarted:
			c.Status, c.Executor, c.LeaseExpiresAt, c.StartedAt = StatusRunning, d.Executor, d.LeaseExpiresAt, e.OccurredAt
		case events.CompletionSucceeded:
			c.Status, c.FinishedAt = StatusSucceeded, e.OccurredAt
			c.Succeeded = &d
		case events.CompletionFailed:
			c.Status, c.FinishedAt = StatusFailed, e.OccurredAt
			c.Failed = &d
		}
		c.Version = e.StreamVersion
	}
	return c, nil
}

// RequestCompletion records a client's request.
type RequestCompletion struct {
	CompletionID string
	AccountID    string
	KeyID        string
	Model        string
	Mode         string
	Request      json.RawMessage
}

// DecideRequestCompletion decides on RequestCompletion.
func DecideRequestCompletion(c Completion, cmd RequestCompletion) ([]events.Data, error) {
	if c.Version > 0 {
		return nil, fmt.Errorf("completion %s: %w", cmd.CompletionID, ErrAlreadyExists)
	}
	if cmd.Mode != events.ModeSync && cmd.Mode != events.ModeAsync {
		return nil, invalid("mode", "must be %q or %q", events.ModeSync, events.ModeAsync)
	}
	if cmd.Model == "" {
		return nil, invalid("model", "is required")
	}
	if !json.Valid(cmd.Request) {
		return nil, invalid("request", "is not JSON")
	}
	return []events.Data{events.CompletionRequested{
		CompletionID: cmd.CompletionID, AccountID: cmd.AccountID, KeyID: cmd.KeyID,
		Model: cmd.Model, Mode: cmd.Mode, Request: cmd.Request,
	}}, nil
}

// StartCompletion claims a queued completion for one executor.
type StartCompletion struct {
	Executor string
	Now      time.Time
	Lease    time.Duration
}

// DecideStartCompletion decides on a claim: only a queued completion can be
// claimed, so a redelivered message finds it running or finished and gets
// ErrAlreadyClaimed.
func DecideStartCompletion(c Completion, cmd StartCompletion) ([]events.Data, error) {
	switch c.Status {
	case StatusNone:
		return nil, fmt.Errorf("completion: %w", ErrNotFound)
	case StatusQueued:
	default:
		return nil, fmt.Errorf("completion %s is %s: %w", c.ID, c.Status, ErrAlreadyClaimed)
	}
	if cmd.Executor == "" {
		return nil, invalid("executor", "is required")
	}
	if cmd.Lease <= 0 {
		return nil, invalid("lease", "must be positive")
	}
	return []events.Data{events.CompletionStarted{
		CompletionID: c.ID, Executor: cmd.Executor, LeaseExpiresAt: cmd.Now.Add(cmd.Lease).UTC(),
	}}, nil
}

// FinishCompletion records the outcome of a running completion: exactly
// one of Succeeded and Failed is set.
type FinishCompletion struct {
	Executor  string
	Succeeded *events.CompletionSucceeded
	Failed    *events.CompletionFailed
}

// DecideFinishCompletion decides on an outcome. Only the executor holding
// the claim may finish a completion, and only once.
func DecideFinishCompletion(c Completion, cmd FinishCompletion) ([]events.Data, error) {
	if c.Status != StatusRunning {
		return nil, fmt.Errorf("completion %s is %q, not running: %w", c.ID, c.Status, ErrWrongState)
	}
	if cmd.Executor != c.Executor {
		return nil, fmt.Errorf("completion %s is claimed by %s, not %s: %w", c.ID, c.Executor, cmd.Executor, ErrAlreadyClaimed)
	}
	switch {
	case cmd.Succeeded != nil && cmd.Failed == nil:
		s := *cmd.Succeeded
		s.CompletionID, s.AccountID, s.KeyID, s.Model = c.ID, c.AccountID, c.KeyID, c.Model
		if s.Usage.PromptTokens < 0 || s.Usage.CompletionTokens < 0 || s.CostNanoUSD < 0 {
			return nil, invalid("usage", "tokens and cost cannot be negative")
		}
		s.Usage.TotalTokens = s.Usage.PromptTokens + s.Usage.CompletionTokens
		return []events.Data{s}, nil
	case cmd.Failed != nil && cmd.Succeeded == nil:
		f := *cmd.Failed
		f.CompletionID, f.AccountID, f.KeyID, f.Model = c.ID, c.AccountID, c.KeyID, c.Model
		return []events.Data{f}, nil
	default:
		return nil, invalid("outcome", "exactly one of succeeded and failed is required")
	}
}
