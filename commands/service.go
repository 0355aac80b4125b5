// Package commands executes commands on Tollgate's aggregates: the
// Service loads an aggregate's stream, folds it with the aggregate's
// Fold, calls its domain's decide function (account, completion,
// billing) and appends the decided events at the version it loaded, with
// event ids seeded so a retried command appends nothing new. There is one
// file per aggregate; the decisions themselves live in the domain
// packages, the typed outcomes in domainerr. The event store is an
// interface defined here: the package imports no driver.
package commands

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/domainerr"
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
	// AtVersion is the stream version the state was folded at.
	AtVersion() int64
	// Owner is the account the stream belongs to; "" before it exists.
	Owner() string
}

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
		if o := st.Owner(); o != "" {
			md.AccountID = o
		}
		stored, err := s.appendSeeded(ctx, streamID, st.AtVersion(), md, data, seed(st))
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
func atVersion[S aggregate](st S) string { return "v" + strconv.FormatInt(st.AtVersion(), 10) }

// get loads an aggregate that must exist.
func get[S aggregate](ctx context.Context, s *Service, streamID, what string, fold func([]events.Envelope) (S, error)) (S, error) {
	st, _, err := load(ctx, s, streamID, fold)
	if err == nil && st.AtVersion() == 0 {
		err = fmt.Errorf("%s: %w", what, domainerr.ErrNotFound)
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
	evs, err := s.seeded(streamID, md, data, suffix)
	if err != nil {
		return nil, err
	}
	return s.store.Append(ctx, streamID, version, evs...)
}

// seeded builds the envelopes appendSeeded appends, stamped with the
// Service's clock.
func (s *Service) seeded(streamID string, md events.Metadata, data []events.Data, suffix string) ([]events.Envelope, error) {
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
	return evs, nil
}
