package pgstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// One group holds good appends beside a retry of stored events, an append
// to a version somebody else took, two appends racing for the same
// version, and one expecting a version the stream has not reached: the
// group stores nothing, each of its appends is retried alone, and each
// gets the answer it would have had alone (of the two racing, one wins).
func TestGroupCommitEachAppendGetsItsOwnAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		retry, taken, race bool // a group failing on a unique violation
		ahead              bool // a group failing its version check
	}{
		{name: "unique violation", retry: true, taken: true, race: true},
		{name: "version check", ahead: true},
		{name: "all", retry: true, taken: true, race: true, ahead: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, pool, reg := groupStore(t)
			stored := mustAppend(t, s, "apikey-dup", 0, ev(t, "apikey-dup", "acc_1", 0, "d1"), ev(t, "apikey-dup", "acc_1", 1, "d2"))
			mustAppend(t, s, "apikey-taken", 0, ev(t, "apikey-taken", "acc_1", 0, "t1"))
			release, held := holdGroup(t, s, pool, "apikey-held")

			var good []<-chan appendResult
			for _, stream := range []string{"apikey-good1", "apikey-good2", "apikey-good3"} {
				good = append(good, appendAsync(ctx, s, stream, 0, ev(t, stream, "acc_1", 0, stream+"a"), ev(t, stream, "acc_1", 0, stream+"b")))
			}
			queued := len(good)
			var retry, taken, ahead <-chan appendResult
			if tc.retry {
				retry, queued = appendAsync(ctx, s, "apikey-dup", 0, ev(t, "apikey-dup", "acc_1", 0, "d1"), ev(t, "apikey-dup", "acc_1", 1, "d2")), queued+1
			}
			if tc.taken {
				taken, queued = appendAsync(ctx, s, "apikey-taken", 0, ev(t, "apikey-taken", "acc_1", 1, "t2")), queued+1
			}
			if tc.ahead {
				ahead, queued = appendAsync(ctx, s, "apikey-ahead", 3, ev(t, "apikey-ahead", "acc_1", 0, "a4")), queued+1
			}
			var race []<-chan appendResult
			if tc.race {
				for _, seed := range []string{"r1", "r2"} {
					race, queued = append(race, appendAsync(ctx, s, "apikey-race", 0, ev(t, "apikey-race", "acc_1", 0, seed))), queued+1
				}
			}
			waitFor(t, "the appends to queue", func() bool { return pgstore.Queued(s) == queued })
			release()

			if r := <-held; r.err != nil {
				t.Fatalf("held append: %v", r.err)
			}
			for i, ch := range good {
				r := <-ch
				if r.err != nil || len(r.out) != 2 || r.out[1].StreamVersion != 2 || r.out[1].Position <= r.out[0].Position {
					t.Errorf("good append %d = %s, %v", i, ids(r.out), r.err)
				}
			}
			if tc.retry {
				r := <-retry
				if r.err != nil || len(r.out) != 2 || r.out[0].Position != stored[0].Position || r.out[1].Position != stored[1].Position {
					t.Errorf("retried append = %s, %v; want the stored events", ids(r.out), r.err)
				}
			}
			wantConflict(t, "taken version", taken, 1)
			wantConflict(t, "version ahead", ahead, 0)
			if tc.race {
				a, b := <-race[0], <-race[1]
				if a.err != nil {
					a, b = b, a
				}
				ch := make(chan appendResult, 1)
				ch <- b
				if a.err != nil || len(a.out) != 1 || a.out[0].StreamVersion != 1 {
					t.Errorf("racing appends: neither won (%v, %v)", a.err, b.err)
				}
				wantConflict(t, "racing append that lost", ch, 1)
			}
			if n, sum := groupSizes(t, reg); n != 4 || int(sum) != 3+queued {
				t.Errorf("%v groups of %v appends, want 4 groups (2 set-up appends, the held one, the %d queued)", n, sum, queued)
			}
			if f := counter(t, reg, "tollgate_eventstore_append_group_fallbacks_total"); f != 1 {
				t.Errorf("%v groups fell back to appending alone, want 1", f)
			}
			want := 10
			if tc.race {
				want++
			}
			if evs := readSettled(t, s, want); len(evs) != want {
				t.Errorf("%d of %d events readable", len(evs), want)
			}
		})
	}
}

// wantConflict checks that the answer on ch (when not nil) is a conflict
// with the stream at version actual.
func wantConflict(t *testing.T, what string, ch <-chan appendResult, actual int64) {
	t.Helper()
	if ch == nil {
		return
	}
	r := <-ch
	var ce *events.ConflictError
	if !errors.As(r.err, &ce) || ce.Actual != actual {
		t.Errorf("%s: err = %v, want a conflict at actual version %d", what, r.err, actual)
	}
}

// counter returns the value of the named counter in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// An append whose caller gives up while it waits for a group is never
// sent: a plain context error, and nothing stored.
func TestGroupCommitCancelledWhileQueued(t *testing.T) {
	t.Parallel()
	s, pool, reg := groupStore(t)
	release, held := holdGroup(t, s, pool, "apikey-held")
	ctx, cancel := context.WithCancel(context.Background())
	gone := appendAsync(ctx, s, "apikey-gone", 0, ev(t, "apikey-gone", "acc_1", 0, "gone"))
	waitFor(t, "the append to queue", func() bool { return pgstore.Queued(s) == 1 })
	cancel()
	r := <-gone
	if !errors.Is(r.err, context.Canceled) || pgstore.Ambiguous(r.err) {
		t.Errorf("cancelled queued append: err = %v (ambiguous %v), want context.Canceled, not ambiguous", r.err, pgstore.Ambiguous(r.err))
	}
	release()
	if r := <-held; r.err != nil {
		t.Fatalf("held append: %v", r.err)
	}
	if evs, err := s.Load(context.Background(), "apikey-gone"); err != nil || len(evs) != 0 {
		t.Errorf("cancelled append stored %s, %v", ids(evs), err)
	}
	if n, _ := groupSizes(t, reg); n != 1 {
		t.Errorf("%v groups sent, want only the held one", n)
	}
}

// An append whose caller gives up once its group was sent is told that
// it may have been stored (Ambiguous), and the group goes on for the
// others: here it is stored.
func TestGroupCommitCancelledWhileSent(t *testing.T) {
	t.Parallel()
	s, pool, _ := groupStore(t)
	releaseNext := block(t, pool, "apikey-slow")
	release, held := holdGroup(t, s, pool, "apikey-held")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone := appendAsync(ctx, s, "apikey-gone", 0, ev(t, "apikey-gone", "acc_1", 0, "gone"))
	slow := appendAsync(context.Background(), s, "apikey-slow", 0, ev(t, "apikey-slow", "acc_1", 0, "slow"))
	waitFor(t, "the appends to queue", func() bool { return pgstore.Queued(s) == 2 })
	release()
	if r := <-held; r.err != nil {
		t.Fatalf("held append: %v", r.err)
	}
	waitFor(t, "their group to wait on its lock", func() bool { return pgstore.Queued(s) == 0 && lockWaiters(t, pool) == 1 })
	cancel()
	r := <-gone
	if !errors.Is(r.err, context.Canceled) || !pgstore.Ambiguous(r.err) {
		t.Errorf("append cancelled once sent: err = %v (ambiguous %v), want context.Canceled, ambiguous", r.err, pgstore.Ambiguous(r.err))
	}
	releaseNext()
	if r := <-slow; r.err != nil {
		t.Fatalf("the other append of the group: %v", r.err)
	}
	if evs, err := s.Load(context.Background(), "apikey-gone"); err != nil || len(evs) != 1 {
		t.Errorf("the cancelled append's group committed; its stream holds %s, %v", ids(evs), err)
	}
}

func TestGroupCommitConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []pgstore.GroupCommitConfig{{MaxAppends: -1}, {MaxEvents: -1}, {MaxInFlight: -2}} {
		if _, err := pgstore.NewWithConfig(nil, pgstore.Config{GroupCommit: c}); err == nil {
			t.Errorf("NewWithConfig(%+v) = nil error", c)
		}
	}
	if err := (pgstore.GroupCommitConfig{MaxAppends: 1, MaxEvents: 1, MaxInFlight: 1}).Validate(); err != nil {
		t.Errorf("Validate of 1s: %v", err)
	}
}
