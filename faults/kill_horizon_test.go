package faults

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// TestKillFollowerSkipsNothingUnderContention stresses what TestKill's
// relay scenario once caught on the earlier read horizon (d44ee5a): the
// projector skipped one transaction's events for good while processes
// restarted on a busy machine. Many goroutines append one event per
// transaction while other readers poll the horizon (reading the lock
// table) and a follower reads the global order in small batches;
// afterwards the follower must have read every event. (It did not
// reproduce that skip; it guards the follower under contention.)
func TestKillFollowerSkipsNothingUnderContention(t *testing.T) {
	t.Parallel()
	const killHorizonPollers = 6
	pool, _ := pgtest.NewPool(t)
	s, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const writers = 24
	stop := time.Now().Add(4 * time.Second)
	var appended atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				stream := fmt.Sprintf("apikey-kill-%d-%d", w, i)
				e, err := events.New(stream, events.APIKeyRevoked{KeyID: "key_" + stream, AccountID: "acc_kill"},
					events.Metadata{AccountID: "acc_kill", Actor: "test"}, time.Now(), uuid.NewString())
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Append(ctx, stream, 0, e); err != nil {
					t.Error(err)
					return
				}
				appended.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Other readers of the horizon (the relay, the lag gauges, other
	// followers) read the lock table all the while.
	var pollers sync.WaitGroup
	for range killHorizonPollers {
		pollers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := s.Horizon(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	defer pollers.Wait()
	seen := map[string]bool{}
	var cur pgstore.Cursor
	follow := func() int {
		evs, next, err := s.ReadAll(ctx, cur, 5, pgstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			seen[e.EventID.String()] = true
		}
		cur = next
		return len(evs)
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			follow()
		}
	}
	for follow() > 0 {
	}
	var total int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != int(appended.Load()) || len(seen) != total {
		rows, _ := pool.Query(ctx, `SELECT event_id::text, transaction_id::text, position FROM events ORDER BY transaction_id, position`)
		var missed []string
		for rows.Next() {
			var id, tx string
			var pos int64
			if err := rows.Scan(&id, &tx, &pos); err != nil {
				t.Fatal(err)
			}
			if !seen[id] {
				missed = append(missed, fmt.Sprintf("tx %s pos %d", tx, pos))
			}
		}
		t.Fatalf("appended %d, stored %d, the follower read %d: it skipped %v", appended.Load(), total, len(seen), missed)
	}
	t.Logf("%d events appended by %d writers, all followed", total, writers)
}
