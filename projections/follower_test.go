package projections_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/projections"

	"github.com/tollgate/tollgate/pgtest"
)

// The follower applies the log exactly once: a restarted follower (a new
// one, as after a crash) resumes from the checkpoint committed with the
// read models, and equals a rebuild from position 0.
func TestFollowerAppliesOnceAcrossRestarts(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	for i := range 7 {
		l.Complete(fmt.Sprintf("chatcmpl-f%d", i), "acc_f", "key_f", "m", 10, 5, 100, at.Add(time.Duration(i)*time.Minute))
	}
	l.Stored() // wait until readable
	ctx := context.Background()
	follow := func(batch int) *projections.Follower {
		f, err := projections.NewFollower(projections.FollowerConfig{Set: newSet(t, pool, projections.LiveSchema), Store: l.Store, BatchSize: batch})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := follow(5)
	if n, err := f.RunOnce(ctx); err != nil || n != 5 {
		t.Fatalf("first batch: %d %v", n, err)
	}
	// A new follower (the process restarted) resumes after the batch.
	f = follow(5)
	total := 5
	// A read may stop below a transaction of the server (another test's)
	// that ended between its snapshot and its look at the locks: read
	// again (bounded) until nothing is left.
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, err := f.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if n == 0 && (total >= len(l.All) || time.Now().After(deadline)) {
			break
		}
		if n == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if total != len(l.All) {
		t.Fatalf("applied %d events of %d", total, len(l.All))
	}
	// And once more from scratch: nothing is read again.
	if n, err := follow(100).RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("after a restart at the head: %d %v", n, err)
	}
	var requests, tokens int64
	if err := pool.QueryRow(ctx, `SELECT sum(requests), sum(prompt_tokens + completion_tokens) FROM usage_rollups`).Scan(&requests, &tokens); err != nil {
		t.Fatal(err)
	}
	if requests != 7 || tokens != 7*15 {
		t.Fatalf("rollups: %d requests, %d tokens; want 7 and %d", requests, tokens, 7*15)
	}
	if _, err := projections.Rebuild(ctx, pool, l.Store, "rebuild", 3, buildAll, nil); err != nil {
		t.Fatal(err)
	}
	diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, "rebuild")
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Fatalf("follower and rebuild differ: %v", diffs)
	}
	if got, want := dump(t, pool, projections.LiveSchema)["usage_ledger"], dump(t, pool, "rebuild")["usage_ledger"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("ledger %v vs %v", got, want)
	}
}
