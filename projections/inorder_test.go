package projections_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

// The follower builds each batch assuming the guard is where its events
// left it; where it is not (some of the events were applied another way
// first), the batch is applied as any other: what was applied is skipped,
// and the read models are those of one event at a time.
func TestFollowerAfterEventsAppliedElsewhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	for i := range 6 {
		l.Complete(fmt.Sprintf("c%d", i), "acc_f", "key_f", "m", 10, 5, 100, at.Add(time.Duration(i)*time.Minute))
	}
	all := l.Stored()

	one := newSet(t, pool, "one")
	if err := projections.CreateReadModels(ctx, pool, "one"); err != nil {
		t.Fatal(err)
	}
	handleAll(t, one, all...)

	live := newSet(t, pool, projections.LiveSchema)
	// Some events, each stream's first ones, applied one by one first:
	// three requests and a claim.
	handleAll(t, live, all[0], all[3], all[4], all[6])
	f, err := projections.NewFollower(projections.FollowerConfig{Set: live, Store: l.Store, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for deadline := time.Now().Add(5 * time.Second); applied < len(all) && time.Now().Before(deadline); {
		n, err := f.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		applied += n
	}
	if applied != len(all) {
		t.Fatalf("follower read %d events of %d", applied, len(all))
	}
	if got, want := dump(t, pool, projections.LiveSchema), dump(t, pool, "one"); !reflect.DeepEqual(got, want) {
		t.Errorf("follower after events applied elsewhere:\n%v\none at a time:\n%v", got, want)
	}
	counter := projections.EventsCounter(live)
	if r, s := counterValue(t, counter.WithLabelValues("completion.requested", "skipped")),
		counterValue(t, counter.WithLabelValues("completion.started", "skipped")); r != 3 || s != 1 {
		t.Errorf("%v requests and %v claims skipped; want the 3 and 1 applied before", r, s)
	}
}
