package pgstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tollgate/tollgate/events"
)

// HeldBackError says that a read of everything committed before it started
// could not finish in time: transactions still appending events held the
// horizon below where the read had to get to.
type HeldBackError struct {
	// Target is the transaction id below which every event had to be read.
	Target uint64
	// Horizon is where the horizon stood when the wait ended.
	Horizon uint64
	// Waited is how long the read waited.
	Waited time.Duration
	// Appenders are the transactions that held the horizon back.
	Appenders []Appender
}

func (e *HeldBackError) Error() string {
	var who []string
	for _, a := range e.Appenders {
		if a.TransactionID != 0 && a.TransactionID < e.Target {
			who = append(who, a.String())
		}
	}
	if len(who) == 0 {
		who = []string{fmt.Sprintf("transaction %d", e.Horizon)}
	}
	return fmt.Sprintf("waited %s for transactions appending events to end (horizon %d, needed %d): %s",
		e.Waited.Round(time.Millisecond), e.Horizon, e.Target, strings.Join(who, "; "))
}

// CatchUpConfig configures CatchUp.
type CatchUpConfig struct {
	// From is the cursor to read after.
	From Cursor
	// BatchSize is the most events per call of the callback; 1000 when zero.
	BatchSize int
	// Filter narrows the events read.
	Filter Filter
	// Wait is how long to wait in all for transactions that hold the
	// horizon back; 30s when zero.
	Wait time.Duration
	// PollInterval is the pause between two looks at the horizon while
	// held back; 20ms when zero.
	PollInterval time.Duration
}

func (c *CatchUpConfig) setDefaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Wait <= 0 {
		c.Wait = 30 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 20 * time.Millisecond
	}
}

// CatchUp reads, in the global order, every event committed before it
// started (and perhaps some committed since), calling fn with each batch
// and the cursor after it, and returns the cursor after the last event
// read. Where a transaction that was appending when it started still runs,
// it waits for it to end — up to cfg.Wait, then it fails with a
// *HeldBackError that names it. An empty read is never taken for the end.
func (s *Store) CatchUp(ctx context.Context, cfg CatchUpConfig, fn func([]events.Envelope, Cursor) error) (Cursor, error) {
	cfg.setDefaults()
	cur := cfg.From
	target, err := s.NextTransactionID(ctx)
	if err != nil {
		return cur, err
	}
	var heldSince time.Time
	for {
		h, err := s.Horizon(ctx)
		if err != nil {
			return cur, err
		}
		evs, next, err := s.ReadBelow(ctx, cur, min(h, target), cfg.BatchSize, cfg.Filter)
		if err != nil {
			return cur, err
		}
		if len(evs) > 0 {
			if err := fn(evs, next); err != nil {
				return cur, err
			}
			cur = next
			heldSince = time.Time{}
		}
		if len(evs) == cfg.BatchSize {
			continue
		}
		if h >= target {
			return cur, nil
		}
		if heldSince.IsZero() {
			heldSince = time.Now()
		}
		if waited := time.Since(heldSince); waited >= cfg.Wait {
			appenders, err := s.Appenders(ctx)
			if err != nil {
				return cur, err
			}
			return cur, &HeldBackError{Target: target, Horizon: h, Waited: waited, Appenders: appenders}
		}
		t := time.NewTimer(cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return cur, ctx.Err()
		case <-t.C:
		}
	}
}
