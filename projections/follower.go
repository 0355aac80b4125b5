package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate/tollgate/events/pgstore"
)

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	// Set applies the events. Required.
	Set *Set
	// Store is the event store followed. Required.
	Store *pgstore.Store
	// Name is the checkpoint's name; "projections:<schema>" when empty.
	Name string
	// BatchSize is the most events applied in one transaction; 1000 when zero.
	BatchSize int
	// PollInterval is the wait after a batch that was not full; 20ms when zero.
	PollInterval time.Duration
	// Logger logs; discarded when nil.
	Logger *slog.Logger
}

// Follower keeps a Set's read models up to date by following the event
// store's global order: it reads a batch after its checkpoint and applies
// it together with the new checkpoint in one transaction.
//
// The projectors follow the store rather than the bus because the read
// models hold money: a batch applies exactly once (the checkpoint commits
// with it), the order is the store's own across every account, and an event
// a projector cannot apply stops the follower (visible as lag) instead of
// being dead-lettered past, which would silently drop usage from the
// ledger and the bills. Batching also lets the projectors keep up with the
// write rate on a small machine. The bus serves the workers and outside
// consumers.
type Follower struct {
	cfg FollowerConfig
	// cur is the checkpoint, loaded once: while a follower runs it is the
	// checkpoint's only writer (RunAsLeader makes sure of that).
	cur *pgstore.Cursor
	// last is cur for other goroutines (the lag gauge).
	mu   sync.Mutex
	last *pgstore.Cursor
}

// Lag returns how many committed events the follower has yet to apply.
func (f *Follower) Lag(ctx context.Context) (int64, error) {
	f.mu.Lock()
	last := f.last
	f.mu.Unlock()
	if last == nil {
		c, err := pgstore.LoadCheckpoint(ctx, f.cfg.Store.Pool(), f.cfg.Name)
		if err != nil {
			return 0, fmt.Errorf("projections follower lag: %w", err)
		}
		last = &c
	}
	return f.cfg.Store.Behind(ctx, *last)
}

// NewFollower returns a Follower.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	if cfg.Set == nil || cfg.Store == nil {
		return nil, errors.New("projections: follower needs a Set and a Store")
	}
	if cfg.Name == "" {
		cfg.Name = "projections:" + cfg.Set.schema
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg}, nil
}

// RunOnce applies the next batch and returns how many events it read.
func (f *Follower) RunOnce(ctx context.Context) (int, error) {
	if f.cur == nil {
		c, err := pgstore.LoadCheckpoint(ctx, f.cfg.Store.Pool(), f.cfg.Name)
		if err != nil {
			return 0, fmt.Errorf("projections follower: %w", err)
		}
		f.cur = &c
	}
	// No read model reads the events' metadata.
	evs, next, err := f.cfg.Store.ReadAll(ctx, *f.cur, f.cfg.BatchSize, pgstore.Filter{WithoutMetadata: true})
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	if err := f.cfg.Set.applyInOrder(ctx, evs, &checkpoint{name: f.cfg.Name, next: next}); err != nil {
		return 0, fmt.Errorf("projections follower: %w", err)
	}
	*f.cur = next
	f.mu.Lock()
	f.last = &next
	f.mu.Unlock()
	return len(evs), nil
}

// Run follows the store until ctx ends, then returns nil. An error is
// logged and retried with backoff: the follower never skips an event.
func (f *Follower) Run(ctx context.Context) error {
	log := f.cfg.Logger.With("component", "projections", "checkpoint", f.cfg.Name)
	log.Info("projections follower started")
	backoff := f.cfg.PollInterval
	for {
		n, err := f.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := f.cfg.PollInterval
		switch {
		case err != nil:
			log.Error("projections failed; retrying", "error", err, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, 30*time.Second)
		case n >= f.cfg.BatchSize:
			backoff = f.cfg.PollInterval
			continue
		default:
			backoff = f.cfg.PollInterval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
