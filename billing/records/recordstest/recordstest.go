// Package recordstest runs the billing read models in tests as the
// projector role runs them: a projections.Follower on the live schema,
// in the background until the test ends.
package recordstest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/projections"
)

// Window is the billing window of the records Follow keeps.
const Window = time.Hour

// Follow runs the billing read models' projectors (hourly records in
// tokens) on the live schema of pool until the test ends, and returns a
// func that waits for them to have applied every event readable when it
// is called.
func Follow(t testing.TB, pool *pgxpool.Pool, store *pgstore.Store) (fresh func(context.Context) error) {
	t.Helper()
	set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil,
		records.Projectors(projections.LiveSchema, Window, billing.UnitTokens)...)
	if err != nil {
		t.Fatal(err)
	}
	f, err := projections.NewFollower(projections.FollowerConfig{Set: set, Store: store, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("billing read models' follower: %v", err)
		}
	})
	return waitFresh(store, "projections:"+projections.LiveSchema, 30*time.Second)
}

// waitFresh returns a func that waits until the follower whose checkpoint
// is named checkpoint has applied every event readable in store when it
// was called, at most wait.
func waitFresh(store *pgstore.Store, checkpoint string, wait time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		head, err := store.Head(ctx)
		if err != nil {
			return err
		}
		deadline := time.Now().Add(wait)
		for {
			cp, err := pgstore.LoadCheckpoint(ctx, store.Pool(), checkpoint)
			if err != nil {
				return err
			}
			if !cp.Less(head) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s at position %d, events up to %d after %s", checkpoint, cp.Position, head.Position, wait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond): // polling the checkpoint in the database
			}
		}
	}
}
