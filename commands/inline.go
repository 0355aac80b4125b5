package commands

import (
	"context"
	"fmt"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/events"
)

// Inline is a synchronous request decided and not yet stored: the request,
// its budget reservation and the inline executor's claim, as events with
// their ids. A synchronous run needs no claim before it calls the
// provider (only a queued job is claimed across processes), so its events
// are appended with the run's outcome, one append per completion
// (FinishInline). A run that goes on for long stores them on their own
// first (StoreInline), after which it is an ordinary claimed run
// (FinishClaimed, lease renewals, the reaper).
//
// The events' ids are the ones RequestCompletion with a claim and
// FinishClaimed give, so an append repeated after a failure without an
// answer stores nothing twice, whichever of the two landed.
type Inline struct {
	// State is the completion the pending events lead to: running,
	// claimed by the executor, at version len(pending).
	State   completion.Completion
	pending []events.Envelope
}

// DecideInline decides a synchronous request and the inline executor's
// claim on it, without storing anything.
func (s *Service) DecideInline(md events.Metadata, cmd completion.RequestCompletion, claim completion.StartCompletion) (*Inline, error) {
	data, err := completion.DecideRequestCompletion(completion.Completion{}, cmd)
	if err != nil {
		return nil, err
	}
	queued := completion.Completion{ID: cmd.CompletionID, AccountID: cmd.AccountID, KeyID: cmd.KeyID, Model: cmd.Model, Mode: cmd.Mode, Status: completion.StatusQueued, Version: 1}
	more, err := completion.DecideStartCompletion(queued, claim)
	if err != nil {
		return nil, err
	}
	md.AccountID = cmd.AccountID
	streamID := completion.CompletionStream(cmd.CompletionID)
	pending, err := s.seeded(streamID, md, append(data, more...), claim.Executor)
	if err != nil {
		return nil, err
	}
	for i := range pending {
		pending[i].StreamID, pending[i].StreamVersion = streamID, int64(i+1)
	}
	state, err := completion.FoldCompletion(pending)
	if err != nil {
		return nil, fmt.Errorf("completion %s: %w", cmd.CompletionID, err)
	}
	return &Inline{State: state, pending: pending}, nil
}

// StoreInline appends in's request and claim on their own (a new stream)
// and returns the stored state, which is in.State.
func (s *Service) StoreInline(ctx context.Context, in *Inline) (completion.Completion, error) {
	stored, err := s.store.Append(ctx, completion.CompletionStream(in.State.ID), 0, in.pending...)
	if err != nil {
		return in.State, err
	}
	return completion.FoldCompletion(stored)
}

// FinishInline records in's request, claim and outcome in one append (a
// new stream), deciding the outcome on in.State as FinishClaimed does.
func (s *Service) FinishInline(ctx context.Context, md events.Metadata, in *Inline, cmd completion.FinishCompletion) (completion.Completion, error) {
	c := in.State
	data, err := completion.DecideFinishCompletion(c, cmd)
	if err != nil {
		return c, err
	}
	md.AccountID = c.AccountID
	outcome, err := s.seeded(completion.CompletionStream(c.ID), md, data, "")
	if err != nil {
		return c, err
	}
	evs := append(append(make([]events.Envelope, 0, len(in.pending)+len(outcome)), in.pending...), outcome...)
	stored, err := s.store.Append(ctx, completion.CompletionStream(c.ID), 0, evs...)
	if err != nil {
		return c, err
	}
	return c.Apply(stored[len(in.pending):]...)
}
