// Package recordstest runs the billing read models in tests as the
// projector role runs them: a projections.Follower on the live schema,
// in the background until the test ends.
package recordstest

import (
	"context"
	"errors"
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
	return records.WaitFresh(store, records.LiveCheckpoint, 30*time.Second)
}

// Links returns the customer links over the read models Follow keeps.
func Links(t testing.TB, pool *pgxpool.Pool, store *pgstore.Store) records.CustomerLinks {
	t.Helper()
	return records.CustomerLinks{Q: pool, Fresh: Follow(t, pool, store)}
}
