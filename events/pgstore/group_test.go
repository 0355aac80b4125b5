package pgstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// Many goroutines append to streams of their own at once, each stream
// several times: every append lands at its versions, with positions
// increasing within it, as Load and the global order read them back.
func TestGroupCommitConcurrentStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	reg := prometheus.NewRegistry()
	s, err := pgstore.NewWithConfig(pool, pgstore.Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const writers, streams, appends = 32, 2, 4
	got := make([][]events.Envelope, writers*streams)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for a := range appends {
				for k := range streams {
					i := w*streams + k
					stream := fmt.Sprintf("apikey-g%d", i)
					evs := make([]events.Envelope, 1+(i+a)%5)
					for j := range evs {
						evs[j] = ev(t, stream, "acc_1", a, fmt.Sprintf("g%d-%d-%d", i, a, j))
					}
					out, err := s.Append(ctx, stream, int64(len(got[i])), evs...)
					if err != nil {
						t.Errorf("append %d to %s: %v", a, stream, err)
						return
					}
					for j, e := range out {
						if e.EventID != evs[j].EventID || e.StreamID != stream || e.StreamVersion != int64(len(got[i])+j+1) {
							t.Errorf("%s append %d event %d = %s %s/%d", stream, a, j, e.EventID, e.StreamID, e.StreamVersion)
						}
						if j > 0 && e.Position <= out[j-1].Position {
							t.Errorf("%s append %d: positions %d then %d", stream, a, out[j-1].Position, e.Position)
						}
					}
					got[i] = append(got[i], out...)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for i, want := range got {
		total += len(want)
		loaded, err := s.Load(ctx, fmt.Sprintf("apikey-g%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(loaded) != len(want) {
			t.Fatalf("stream %d: loaded %d events, appended %d", i, len(loaded), len(want))
		}
		for j := range want {
			if loaded[j].EventID != want[j].EventID || loaded[j].Position != want[j].Position {
				t.Errorf("stream %d event %d: loaded %s @%d, append answered %s @%d", i, j,
					loaded[j].EventID, loaded[j].Position, want[j].EventID, want[j].Position)
			}
		}
	}
	if evs := readSettled(t, s, total); len(evs) != total {
		t.Errorf("%d of %d events readable", len(evs), total)
	}
	n, sum := groupSizes(t, reg)
	t.Logf("%d appends in %.0f groups", int(sum), n)
	if int(sum) != writers*streams*appends {
		t.Errorf("groups hold %d appends, want %d", int(sum), writers*streams*appends)
	}
}

// groupStore returns a store that sends one group at a time, and a
// registry of its metrics.
func groupStore(t *testing.T) (*pgstore.Store, *pgxpool.Pool, *prometheus.Registry) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	reg := prometheus.NewRegistry()
	s, err := pgstore.NewWithConfig(pool, pgstore.Config{Registerer: reg, GroupCommit: pgstore.GroupCommitConfig{MaxInFlight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return s, pool, reg
}

// block stores an event at version 1 of each stream in a transaction it
// leaves open: an append to one of them waits for the transaction to end
// (and then goes in, as it is rolled back). It returns the rollback.
func block(t *testing.T, pool *pgxpool.Pool, streams ...string) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range streams {
		if _, err := tx.Exec(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, data, metadata)
			VALUES (gen_random_uuid(), $1, 1, 'test.blocker', 1, now(), '{}', '{}')`, stream); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	rollback := func() { once.Do(func() { _ = tx.Rollback(ctx) }) }
	t.Cleanup(rollback)
	return rollback
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// lockWaiters returns how many statements of pool's database wait for a lock.
func lockWaiters(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// appendResult is an Append's answer.
type appendResult struct {
	out []events.Envelope
	err error
}

// appendAsync starts an Append and returns where its answer will be.
func appendAsync(ctx context.Context, s *pgstore.Store, stream string, expected int64, evs ...events.Envelope) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		out, err := s.Append(ctx, stream, expected, evs...)
		ch <- appendResult{out, err}
	}()
	return ch
}

// holdGroup starts an append that waits on a lock in its group's
// statement, so that the appends after it queue for the next group; it
// returns the release and the held append's answer.
func holdGroup(t *testing.T, s *pgstore.Store, pool *pgxpool.Pool, stream string) (func(), <-chan appendResult) {
	t.Helper()
	release := block(t, pool, stream)
	held := appendAsync(context.Background(), s, stream, 0, ev(t, stream, "acc_1", 0, stream))
	waitFor(t, "the held group to wait on its lock", func() bool { return lockWaiters(t, pool) == 1 })
	return release, held
}
