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

// aggregate is the state of one stream, as its Fold function builds it.
type aggregate interface {
	// streamVersion is the stream version the state was folded at.
	streamVersion() int64
	// owner is the account the stream belongs to; "" before it exists.
	owner() string
}

func (a Account) streamVersion() int64    { return a.Version }
func (a Account) owner() string           { return a.ID }
func (k APIKey) streamVersion() int64     { return k.Version }
func (k APIKey) owner() string            { return k.AccountID }
func (c Completion) streamVersion() int64 { return c.Version }
func (c Completion) owner() string        { return c.AccountID }

// load folds a stream and returns the state with the events it came from.
func load[S any](ctx context.Context, s *Service, streamID string, fold func([]events.Envelope) (S, error)) (S, []events.Envelope, error) {
	evs, err := s.store.Load(ctx, streamID)
	if err != nil {
		var zero S
		return zero, nil, err
	}
	st, err := fold(evs)
	return st, evs, err
}

// update runs one command on one stream: it folds the stream, decides on
// the state and appends the decision at the version it folded, with event
// ids seeded by the stream, each event's type and seed(state, decision)
// (see appendSeeded). A concurrent writer makes the append fail with a
// conflict; with retries > 0 the command is decided again on the new
// state up to that many times. It returns the new state and the stored
// events; on a decision's error, the state it was decided on.
func update[S aggregate](ctx context.Context, s *Service, streamID string, md events.Metadata, fold func([]events.Envelope) (S, error),
	seed func(S) string, retries int, decide func(S) ([]events.Data, error)) (S, []events.Envelope, error) {
	for attempt := 0; ; attempt++ {
		st, evs, err := load(ctx, s, streamID, fold)
		if err != nil {
			return st, nil, err
		}
		data, err := decide(st)
		if err != nil {
			return st, nil, err
		}
		if o := st.owner(); o != "" {
			md.AccountID = o
		}
		stored, err := s.appendSeeded(ctx, streamID, st.streamVersion(), md, data, seed(st))
		if errors.Is(err, events.ErrConflict) && attempt < retries {
			continue
		}
		if err != nil {
			return st, nil, err
		}
		st, err = fold(append(evs, stored...))
		return st, stored, err
	}
}

// once seeds events that happen at most once per stream: their ids derive
// from the stream and type alone, so a retried command appends nothing new.
func once[S any](S) string { return "" }

// atVersion seeds events that may recur on a stream (a plan changed back
// and forth): a retry of the same change appends nothing new, a later
// change gets ids of its own.
func atVersion[S aggregate](st S) string { return "v" + strconv.FormatInt(st.streamVersion(), 10) }

// get loads an aggregate that must exist.
func get[S aggregate](ctx context.Context, s *Service, streamID, what string, fold func([]events.Envelope) (S, error)) (S, error) {
	st, _, err := load(ctx, s, streamID, fold)
	if err == nil && st.streamVersion() == 0 {
		err = fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return st, err
}

// appendSeeded appends events whose ids derive from the stream, the type
// and suffix: appending the same events again (a retried command) stores
// nothing new, while different suffixes (two executors' claims, the n-th
// requeue) give events of their own, so the loser of a race sees a
// conflict rather than an idempotent success.
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
	return get(ctx, s, AccountStream(accountID), "account "+accountID, FoldAccount)
}

// CreateAccount opens an account.
func (s *Service) CreateAccount(ctx context.Context, md events.Metadata, cmd CreateAccount) (Account, error) {
	md.AccountID = cmd.AccountID
	a, _, err := update(ctx, s, AccountStream(cmd.AccountID), md, FoldAccount, once, 0, func(a Account) ([]events.Data, error) {
		return DecideCreateAccount(a, cmd, s.planExists)
	})
	return a, err
}

// APIKey returns a key, or ErrNotFound.
func (s *Service) APIKey(ctx context.Context, keyID string) (APIKey, error) {
	return get(ctx, s, APIKeyStream(keyID), "key "+keyID, FoldAPIKey)
}

// IssueAPIKey issues a key.
func (s *Service) IssueAPIKey(ctx context.Context, md events.Metadata, cmd IssueAPIKey) (APIKey, error) {
	a, err := s.Account(ctx, cmd.AccountID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return APIKey{}, err
	}
	md.AccountID = cmd.AccountID
	k, _, err := update(ctx, s, APIKeyStream(cmd.KeyID), md, FoldAPIKey, once, 0, func(k APIKey) ([]events.Data, error) {
		return DecideIssueAPIKey(a, k, cmd)
	})
	return k, err
}

// RevokeAPIKey revokes a key.
func (s *Service) RevokeAPIKey(ctx context.Context, md events.Metadata, keyID string) (APIKey, error) {
	k, _, err := update(ctx, s, APIKeyStream(keyID), md, FoldAPIKey, once, 0, DecideRevokeAPIKey)
	return k, err
}

// Completion returns a completion, or ErrNotFound.
func (s *Service) Completion(ctx context.Context, completionID string) (Completion, error) {
	return get(ctx, s, CompletionStream(completionID), "completion "+completionID, FoldCompletion)
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
	// The claim's id is random, never derived: two deliveries of one
	// message to the same executor must not both see an "idempotent"
	// success and both call the provider. The loser gets a conflict.
	claimID := func(Completion) string { return cmd.Executor + "|" + uuid.NewString() }
	c, _, err := update(ctx, s, CompletionStream(completionID), md, FoldCompletion, claimID, 0, func(c Completion) ([]events.Data, error) {
		return DecideStartCompletion(c, cmd)
	})
	if errors.Is(err, events.ErrConflict) {
		return c, fmt.Errorf("completion %s: %w", completionID, ErrAlreadyClaimed)
	}
	return c, err
}

// FinishCompletion records the outcome of a running completion.
func (s *Service) FinishCompletion(ctx context.Context, md events.Metadata, completionID string, cmd FinishCompletion) (Completion, error) {
	c, _, err := load(ctx, s, CompletionStream(completionID), FoldCompletion)
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
	c, stored, err := update(ctx, s, CompletionStream(completionID), md, FoldCompletion, once, 0, func(c Completion) ([]events.Data, error) {
		return DecideAbandonCompletion(c, cmd)
	})
	return c, storedBy(stored, md, c), err
}

// storedBy reports whether the first of stored is this caller's (its
// metadata is md completed with the stream's account), not another
// writer's found by an idempotent append.
func storedBy(stored []events.Envelope, md events.Metadata, st aggregate) bool {
	if o := st.owner(); o != "" {
		md.AccountID = o
	}
	return len(stored) > 0 && stored[0].Metadata == md
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
	suffix := ""
	c, stored, err := update(ctx, s, CompletionStream(completionID), md, FoldCompletion, func(Completion) string { return suffix },
		0, func(c Completion) ([]events.Data, error) {
			data, err := DecideRequeueCompletion(c, cmd)
			if errors.Is(err, ErrNoRetry) {
				return DecideAbandonCompletion(c, AbandonCompletion{Now: cmd.Now, Reason: cmd.Reason})
			}
			// The n-th requeue has its own id: a stale reaper repeating an
			// earlier one finds it stored, a requeue after a later claim is
			// a new event.
			suffix = "retry|" + strconv.Itoa(c.Retries+1)
			return data, err
		})
	return c, storedBy(stored, md, c), err
}

// RecordCallback records the outcome of a job's callback. Its event id
// derives from the stream and type, and the decision admits one outcome
// per completion, so a retried or concurrent record appends nothing more
// (ErrAlreadyExists, or events.ErrConflict when two raced).
func (s *Service) RecordCallback(ctx context.Context, md events.Metadata, completionID string, cmd RecordCallback) (Completion, error) {
	c, _, err := update(ctx, s, CompletionStream(completionID), md, FoldCompletion, once, 0, func(c Completion) ([]events.Data, error) {
		return DecideRecordCallback(c, cmd)
	})
	return c, err
}

// CompletionHistory returns a completion and the events it was folded
// from, in stream order: the request's whole timeline. ErrNotFound when
// there is no such completion.
func (s *Service) CompletionHistory(ctx context.Context, completionID string) (Completion, []events.Envelope, error) {
	c, evs, err := load(ctx, s, CompletionStream(completionID), FoldCompletion)
	if err == nil && c.Version == 0 {
		err = fmt.Errorf("completion %s: %w", completionID, ErrNotFound)
	}
	return c, evs, err
}
