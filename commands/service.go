package commands

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/events"
)

// EventStore is what the Service needs of the event store.
type EventStore interface {
	Load(ctx context.Context, streamID string) ([]events.Envelope, error)
	Append(ctx context.Context, streamID string, expectedVersion int64, evs ...events.Envelope) ([]events.Envelope, error)
}

// Service executes commands: it loads an aggregate, decides, and appends
// the decided events at the version it loaded, so a concurrent writer makes
// the append fail with a conflict instead of both winning.
type Service struct {
	store      EventStore
	now        func() time.Time
	planExists func(string) bool
}

// NewService returns a Service. planExists tells whether a plan is
// configured; now is the clock (time.Now in production).
func NewService(store EventStore, planExists func(string) bool, now func() time.Time) *Service {
	return &Service{store: store, now: now, planExists: planExists}
}

// appendOnce appends events that happen at most once per stream. Their ids
// derive from the stream and type, so a retried command appends nothing new.
func (s *Service) appendOnce(ctx context.Context, streamID string, version int64, md events.Metadata, data []events.Data) ([]events.Envelope, error) {
	return s.appendSeeded(ctx, streamID, version, md, data, "")
}

// appendSeeded is appendOnce with a suffix in the id seed, for events that
// several actors may try to append (claims): each actor's event gets its
// own id, so the loser sees a conflict rather than an idempotent success.
func (s *Service) appendSeeded(ctx context.Context, streamID string, version int64, md events.Metadata, data []events.Data, suffix string) ([]events.Envelope, error) {
	if len(data) == 0 {
		return nil, nil
	}
	now := s.now()
	evs := make([]events.Envelope, len(data))
	seen := map[string]int{}
	for i, d := range data {
		// The n-th event of a type in one append (attempts) gets its own id.
		seed := streamID + "|" + d.EventType() + "|" + suffix
		if n := seen[d.EventType()]; n > 0 {
			seed += "|" + strconv.Itoa(n)
		}
		seen[d.EventType()]++
		e, err := events.New(streamID, d, md, now, seed)
		if err != nil {
			return nil, err
		}
		evs[i] = e
	}
	return s.store.Append(ctx, streamID, version, evs...)
}

// Account returns an account, or ErrNotFound.
func (s *Service) Account(ctx context.Context, accountID string) (Account, error) {
	evs, err := s.store.Load(ctx, AccountStream(accountID))
	if err != nil {
		return Account{}, err
	}
	a, err := FoldAccount(evs)
	if err != nil {
		return Account{}, err
	}
	if !a.Exists() {
		return Account{}, fmt.Errorf("account %s: %w", accountID, ErrNotFound)
	}
	return a, nil
}

// CreateAccount opens an account.
func (s *Service) CreateAccount(ctx context.Context, md events.Metadata, cmd CreateAccount) (Account, error) {
	evs, err := s.store.Load(ctx, AccountStream(cmd.AccountID))
	if err != nil {
		return Account{}, err
	}
	a, err := FoldAccount(evs)
	if err != nil {
		return Account{}, err
	}
	data, err := DecideCreateAccount(a, cmd, s.planExists)
	if err != nil {
		return Account{}, err
	}
	md.AccountID = cmd.AccountID
	stored, err := s.appendOnce(ctx, AccountStream(cmd.AccountID), a.Version, md, data)
	if err != nil {
		return Account{}, err
	}
	return FoldAccount(append(evs, stored...))
}

// APIKey returns a key, or ErrNotFound.
func (s *Service) APIKey(ctx context.Context, keyID string) (APIKey, error) {
	evs, err := s.store.Load(ctx, APIKeyStream(keyID))
	if err != nil {
		return APIKey{}, err
	}
	k, err := FoldAPIKey(evs)
	if err != nil {
		return APIKey{}, err
	}
	if !k.Exists() {
		return APIKey{}, fmt.Errorf("key %s: %w", keyID, ErrNotFound)
	}
	return k, nil
}

// IssueAPIKey issues a key.
func (s *Service) IssueAPIKey(ctx context.Context, md events.Metadata, cmd IssueAPIKey) (APIKey, error) {
	a, err := s.Account(ctx, cmd.AccountID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return APIKey{}, err
	}
	evs, err := s.store.Load(ctx, APIKeyStream(cmd.KeyID))
	if err != nil {
		return APIKey{}, err
	}
	k, err := FoldAPIKey(evs)
	if err != nil {
		return APIKey{}, err
	}
	data, err := DecideIssueAPIKey(a, k, cmd)
	if err != nil {
		return APIKey{}, err
	}
	md.AccountID = cmd.AccountID
	stored, err := s.appendOnce(ctx, APIKeyStream(cmd.KeyID), k.Version, md, data)
	if err != nil {
		return APIKey{}, err
	}
	return FoldAPIKey(append(evs, stored...))
}

// RevokeAPIKey revokes a key.
func (s *Service) RevokeAPIKey(ctx context.Context, md events.Metadata, keyID string) (APIKey, error) {
	evs, err := s.store.Load(ctx, APIKeyStream(keyID))
	if err != nil {
		return APIKey{}, err
	}
	k, err := FoldAPIKey(evs)
	if err != nil {
		return APIKey{}, err
	}
	data, err := DecideRevokeAPIKey(k)
	if err != nil {
		return APIKey{}, err
	}
	md.AccountID = k.AccountID
	stored, err := s.appendOnce(ctx, APIKeyStream(keyID), k.Version, md, data)
	if err != nil {
		return APIKey{}, err
	}
	return FoldAPIKey(append(evs, stored...))
}

// Completion returns a completion, or ErrNotFound.
func (s *Service) Completion(ctx context.Context, completionID string) (Completion, error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, err
	}
	c, err := FoldCompletion(evs)
	if err != nil {
		return Completion{}, err
	}
	if c.Version == 0 {
		return Completion{}, fmt.Errorf("completion %s: %w", completionID, ErrNotFound)
	}
	return c, nil
}

// RequestCompletion records a request. With claim set (the inline path),
// the claim is appended in the same transaction, so a synchronous request
// costs one write before the provider is called.
func (s *Service) RequestCompletion(ctx context.Context, md events.Metadata, cmd RequestCompletion, claim *StartCompletion) (Completion, error) {
	var c Completion
	data, err := DecideRequestCompletion(c, cmd)
	if err != nil {
		return Completion{}, err
	}
	if claim != nil {
		// Decide the claim on the state the request leads to.
		c = Completion{ID: cmd.CompletionID, AccountID: cmd.AccountID, KeyID: cmd.KeyID, Model: cmd.Model, Mode: cmd.Mode, Status: StatusQueued, Version: 1}
		more, err := DecideStartCompletion(c, *claim)
		if err != nil {
			return Completion{}, err
		}
		data = append(data, more...)
	}
	md.AccountID = cmd.AccountID
	suffix := ""
	if claim != nil {
		suffix = claim.Executor
	}
	stored, err := s.appendSeeded(ctx, CompletionStream(cmd.CompletionID), 0, md, data, suffix)
	if err != nil {
		return Completion{}, err
	}
	return FoldCompletion(stored)
}

// StartCompletion claims a queued completion. It returns ErrAlreadyClaimed
// when another executor was first, also when both raced to the append.
func (s *Service) StartCompletion(ctx context.Context, md events.Metadata, completionID string, cmd StartCompletion) (Completion, error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, err
	}
	c, err := FoldCompletion(evs)
	if err != nil {
		return Completion{}, err
	}
	data, err := DecideStartCompletion(c, cmd)
	if err != nil {
		return c, err
	}
	md.AccountID = c.AccountID
	// The claim's id is random, never derived: two deliveries of one
	// message to the same executor must not both see an "idempotent"
	// success and both call the provider. The loser gets a conflict.
	stored, err := s.appendSeeded(ctx, CompletionStream(completionID), c.Version, md, data, cmd.Executor+"|"+uuid.NewString())
	if errors.Is(err, events.ErrConflict) {
		return c, fmt.Errorf("completion %s: %w", completionID, ErrAlreadyClaimed)
	}
	if err != nil {
		return Completion{}, err
	}
	return c.Apply(stored...)
}

// FinishCompletion records the outcome of a running completion.
func (s *Service) FinishCompletion(ctx context.Context, md events.Metadata, completionID string, cmd FinishCompletion) (Completion, error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, err
	}
	c, err := FoldCompletion(evs)
	if err != nil {
		return Completion{}, err
	}
	return s.FinishClaimed(ctx, md, c, cmd)
}

// FinishClaimed records the outcome of a completion the caller claimed,
// deciding on the state c the caller holds instead of reloading it: an
// executor is the only writer of a claimed stream, and if anyone else did
// write (a reaper ending an expired claim) the append at c.Version fails
// with a conflict, so the shortcut can never record over a newer state.
func (s *Service) FinishClaimed(ctx context.Context, md events.Metadata, c Completion, cmd FinishCompletion) (Completion, error) {
	data, err := DecideFinishCompletion(c, cmd)
	if err != nil {
		return c, err
	}
	md.AccountID = c.AccountID
	// Each run of a requeued job has its own outcome ids: a run whose
	// claim expired (a slow executor, not a dead one) finishing after the
	// retry recorded its outcome must conflict, not find the retry's
	// events and take them for its own (it would then settle again). The
	// first run keeps the stream-derived ids, so a retried append of the
	// same outcome stays idempotent.
	suffix := ""
	if c.Retries > 0 {
		suffix = "run|" + strconv.Itoa(c.Retries)
	}
	stored, err := s.appendSeeded(ctx, CompletionStream(c.ID), c.Version, md, data, suffix)
	if err != nil {
		return c, err
	}
	return c.Apply(stored...)
}

// AbandonExpired ends a running completion whose claim expired at cmd.Now
// (its executor died or hung) with completion.abandoned. The event's id
// derives from the stream, so however many reapers try, the stream gets
// one such event. mine reports whether this call stored it: false when
// another reaper was first (the stored event then carries the other
// reaper's metadata; callers give each attempt its own correlation id).
// A completion that is not running, or whose lease is still valid, gets
// ErrWrongState; one that changed while deciding gets events.ErrConflict.
func (s *Service) AbandonExpired(ctx context.Context, md events.Metadata, completionID string, cmd AbandonCompletion) (c Completion, mine bool, err error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, false, err
	}
	if c, err = FoldCompletion(evs); err != nil {
		return Completion{}, false, err
	}
	data, err := DecideAbandonCompletion(c, cmd)
	if err != nil {
		return c, false, err
	}
	md.AccountID = c.AccountID
	stored, err := s.appendOnce(ctx, CompletionStream(completionID), c.Version, md, data)
	if err != nil {
		return c, false, err
	}
	mine = len(stored) > 0 && stored[0].Metadata == md
	c, err = c.Apply(stored...)
	return c, mine, err
}

// ReapExpired ends the claim of a running completion that expired at
// cmd.Now, by the retry policy: a queued job with retries left goes back
// to the queue (completion.requeued, its reservation kept for the retry);
// any other gets completion.abandoned, which releases its reservation (see
// DecideRequeueCompletion for when a retry is refused). The returned
// state's Status says which: StatusQueued or StatusAbandoned. With
// cmd.MaxRetries 0 it is AbandonExpired.
//
// Both are appended at the version loaded, with ids derived from the
// stream (and the retry number, for a requeue), so however many reapers
// try, a claim is ended once; mine reports whether this call stored the
// event, as for AbandonExpired. A completion that is not running, or whose
// lease is still valid, gets ErrWrongState; one that changed while
// deciding gets events.ErrConflict.
func (s *Service) ReapExpired(ctx context.Context, md events.Metadata, completionID string, cmd RequeueCompletion) (c Completion, mine bool, err error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, false, err
	}
	if c, err = FoldCompletion(evs); err != nil {
		return Completion{}, false, err
	}
	data, err := DecideRequeueCompletion(c, cmd)
	suffix := ""
	switch {
	case errors.Is(err, ErrNoRetry):
		if data, err = DecideAbandonCompletion(c, AbandonCompletion{Now: cmd.Now, Reason: cmd.Reason}); err != nil {
			return c, false, err
		}
	case err != nil:
		return c, false, err
	default:
		// The n-th requeue has its own id: a stale reaper repeating an
		// earlier one finds it stored, a requeue after a later claim is
		// a new event.
		suffix = "retry|" + strconv.Itoa(c.Retries+1)
	}
	md.AccountID = c.AccountID
	stored, err := s.appendSeeded(ctx, CompletionStream(completionID), c.Version, md, data, suffix)
	if err != nil {
		return c, false, err
	}
	mine = len(stored) > 0 && stored[0].Metadata == md
	c, err = c.Apply(stored...)
	return c, mine, err
}

// RecordCallback records the outcome of a job's callback. Its event id
// derives from the stream and type, and the decision admits one outcome
// per completion, so a retried or concurrent record appends nothing more
// (ErrAlreadyExists, or events.ErrConflict when two raced).
func (s *Service) RecordCallback(ctx context.Context, md events.Metadata, completionID string, cmd RecordCallback) (Completion, error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, err
	}
	c, err := FoldCompletion(evs)
	if err != nil {
		return Completion{}, err
	}
	data, err := DecideRecordCallback(c, cmd)
	if err != nil {
		return c, err
	}
	md.AccountID = c.AccountID
	stored, err := s.appendOnce(ctx, CompletionStream(completionID), c.Version, md, data)
	if err != nil {
		return c, err
	}
	return c.Apply(stored...)
}

// CompletionHistory returns a completion and the events it was folded
// from, in stream order: the request's whole timeline. ErrNotFound when
// there is no such completion.
func (s *Service) CompletionHistory(ctx context.Context, completionID string) (Completion, []events.Envelope, error) {
	evs, err := s.store.Load(ctx, CompletionStream(completionID))
	if err != nil {
		return Completion{}, nil, err
	}
	c, err := FoldCompletion(evs)
	if err != nil {
		return Completion{}, nil, err
	}
	if c.Version == 0 {
		return Completion{}, nil, fmt.Errorf("completion %s: %w", completionID, ErrNotFound)
	}
	return c, evs, nil
}
