package commands

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Completion returns a completion, or ErrNotFound.
func (s *Service) Completion(ctx context.Context, completionID string) (completion.Completion, error) {
	return get(ctx, s, completion.CompletionStream(completionID), "completion "+completionID, completion.FoldCompletion)
}

// RequestCompletion records a request. With claim set (the inline path),
// the claim is appended in the same transaction, so a synchronous request
// costs one write before the provider is called.
func (s *Service) RequestCompletion(ctx context.Context, md events.Metadata, cmd completion.RequestCompletion, claim *completion.StartCompletion) (completion.Completion, error) {
	var c completion.Completion
	data, err := completion.DecideRequestCompletion(c, cmd)
	if err != nil {
		return completion.Completion{}, err
	}
	if claim != nil {
		// Decide the claim on the state the request leads to.
		c = completion.Completion{ID: cmd.CompletionID, AccountID: cmd.AccountID, KeyID: cmd.KeyID, Model: cmd.Model, Mode: cmd.Mode, Status: completion.StatusQueued, Version: 1}
		more, err := completion.DecideStartCompletion(c, *claim)
		if err != nil {
			return completion.Completion{}, err
		}
		data = append(data, more...)
	}
	md.AccountID = cmd.AccountID
	suffix := ""
	if claim != nil {
		suffix = claim.Executor
	}
	stored, err := s.appendSeeded(ctx, completion.CompletionStream(cmd.CompletionID), 0, md, data, suffix)
	if err != nil {
		return completion.Completion{}, err
	}
	return completion.FoldCompletion(stored)
}

// StartCompletion claims a queued completion. It returns ErrAlreadyClaimed
// when another executor was first, also when both raced to the append.
func (s *Service) StartCompletion(ctx context.Context, md events.Metadata, completionID string, cmd completion.StartCompletion) (completion.Completion, error) {
	// The claim's id is random, never derived: two deliveries of one
	// message to the same executor must not both see an "idempotent"
	// success and both call the provider. The loser gets a conflict.
	claimID := func(completion.Completion) string { return cmd.Executor + "|" + uuid.NewString() }
	c, _, err := update(ctx, s, completion.CompletionStream(completionID), md, completion.FoldCompletion, claimID, 0, func(c completion.Completion) ([]events.Data, error) {
		return completion.DecideStartCompletion(c, cmd)
	})
	if errors.Is(err, events.ErrConflict) {
		return c, fmt.Errorf("completion %s: %w", completionID, domainerr.ErrAlreadyClaimed)
	}
	return c, err
}

// FinishCompletion records the outcome of a running completion.
func (s *Service) FinishCompletion(ctx context.Context, md events.Metadata, completionID string, cmd completion.FinishCompletion) (completion.Completion, error) {
	c, _, err := load(ctx, s, completion.CompletionStream(completionID), completion.FoldCompletion)
	if err != nil {
		return completion.Completion{}, err
	}
	return s.FinishClaimed(ctx, md, c, cmd)
}

// FinishClaimed records the outcome of a completion the caller claimed,
// deciding on the state c the caller holds instead of reloading it: an
// executor is the only writer of a claimed stream, and if anyone else did
// write (a reaper ending an expired claim) the append at c.Version fails
// with a conflict, so the shortcut can never record over a newer state.
func (s *Service) FinishClaimed(ctx context.Context, md events.Metadata, c completion.Completion, cmd completion.FinishCompletion) (completion.Completion, error) {
	data, err := completion.DecideFinishCompletion(c, cmd)
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
	stored, err := s.appendSeeded(ctx, completion.CompletionStream(c.ID), c.Version, md, data, suffix)
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
func (s *Service) AbandonExpired(ctx context.Context, md events.Metadata, completionID string, cmd completion.AbandonCompletion) (c completion.Completion, mine bool, err error) {
	c, stored, err := update(ctx, s, completion.CompletionStream(completionID), md, completion.FoldCompletion, once, 0, func(c completion.Completion) ([]events.Data, error) {
		return completion.DecideAbandonCompletion(c, cmd)
	})
	return c, storedBy(stored, md, c), err
}

// storedBy reports whether the first of stored is this caller's (its
// metadata is md completed with the stream's account), not another
// writer's found by an idempotent append.
func storedBy(stored []events.Envelope, md events.Metadata, st aggregate) bool {
	if o := st.Owner(); o != "" {
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
func (s *Service) ReapExpired(ctx context.Context, md events.Metadata, completionID string, cmd completion.RequeueCompletion) (c completion.Completion, mine bool, err error) {
	suffix := ""
	c, stored, err := update(ctx, s, completion.CompletionStream(completionID), md, completion.FoldCompletion, func(completion.Completion) string { return suffix },
		0, func(c completion.Completion) ([]events.Data, error) {
			data, err := completion.DecideRequeueCompletion(c, cmd)
			if errors.Is(err, completion.ErrNoRetry) {
				return completion.DecideAbandonCompletion(c, completion.AbandonCompletion{Now: cmd.Now, Reason: cmd.Reason})
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
func (s *Service) RecordCallback(ctx context.Context, md events.Metadata, completionID string, cmd completion.RecordCallback) (completion.Completion, error) {
	c, _, err := update(ctx, s, completion.CompletionStream(completionID), md, completion.FoldCompletion, once, 0, func(c completion.Completion) ([]events.Data, error) {
		return completion.DecideRecordCallback(c, cmd)
	})
	return c, err
}

// CompletionHistory returns a completion and the events it was folded
// from, in stream order: the request's whole timeline. ErrNotFound when
// there is no such completion.
func (s *Service) CompletionHistory(ctx context.Context, completionID string) (completion.Completion, []events.Envelope, error) {
	c, evs, err := load(ctx, s, completion.CompletionStream(completionID), completion.FoldCompletion)
	if err == nil && c.Version == 0 {
		err = fmt.Errorf("completion %s: %w", completionID, domainerr.ErrNotFound)
	}
	return c, evs, err
}

// RenewClaim renews the lease of the claim c, which the caller holds,
// deciding on c as FinishClaimed does and appending at c.Version: the
// caller is the stream's only writer while its claim stands, so a
// conflict means a reaper ended the claim, and RenewClaim returns
// ErrClaimLost (with the conflict). The renewal's id derives from the
// stream and the version it follows, so a retried append stores nothing
// new. It returns the state after the renewal (c itself when nothing was
// to renew).
func (s *Service) RenewClaim(ctx context.Context, md events.Metadata, c completion.Completion, cmd completion.RenewLease) (completion.Completion, error) {
	data, err := completion.DecideRenewLease(c, cmd)
	if err != nil || len(data) == 0 {
		return c, err
	}
	md.AccountID = c.AccountID
	stored, err := s.appendSeeded(ctx, completion.CompletionStream(c.ID), c.Version, md, data, "renew|v"+strconv.FormatInt(c.Version, 10))
	if errors.Is(err, events.ErrConflict) {
		return c, fmt.Errorf("renew the lease of %s: %w: %w", c.ID, domainerr.ErrClaimLost, err)
	}
	if err != nil {
		return c, fmt.Errorf("renew the lease of %s: %w", c.ID, err)
	}
	return c.Apply(stored...)
}
