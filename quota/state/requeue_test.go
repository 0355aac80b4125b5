package state_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/projections/projectionstest"
	"github.com/tollgate/tollgate/quota/state"
)

// A requeued job reads queued again, without its dead claim, until a retry
// claims it; the reaper does not see it meanwhile. The quota read model
// keeps its reservation across the requeue and settles it once.
func TestJobsRequeueAndReservation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := projectionstest.NewLog(t, pool)
	set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, jobs.New(projections.LiveSchema), state.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	at := day0.Add(9 * time.Hour)
	reserved := func(id string) events.QuotaReserved {
		return events.QuotaReserved{CompletionID: id, AccountID: "acc_1", KeyID: "key_1", CostNanoUSD: 5000, Tokens: 100,
			Day: at.Format("2006-01-02"), Month: at.Format("2006-01"), ExpiresAt: at.Add(time.Hour)}
	}
	requeued := func(id, executor string, lease time.Time, retry int) events.CompletionRequeued {
		return events.CompletionRequeued{CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m",
			Executor: executor, LeaseExpiresAt: lease, Retry: retry, Reason: "lease_expired"}
	}
	type jobRow struct {
		status         string
		executor       *string
		lease, started *time.Time
		finished       *time.Time
	}
	job := func(id string) jobRow {
		t.Helper()
		var j jobRow
		if err := pool.QueryRow(ctx, `SELECT status, executor, lease_expires_at, started_at, finished_at FROM jobs WHERE completion_id = $1`, id).
			Scan(&j.status, &j.executor, &j.lease, &j.started, &j.finished); err != nil {
			t.Fatal(err)
		}
		return j
	}
	reservedNow := func() (int64, int) {
		t.Helper()
		var r int64
		var n int
		if err := pool.QueryRow(ctx, `SELECT coalesce(sum(reserved), 0)::bigint FROM quota_state WHERE scope = 'account' AND period LIKE 'day:%'`).Scan(&r); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM quota_reservations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return r, n
	}

	// r: requested with a reservation, claimed, its worker died, requeued.
	l.Requested("r", "acc_1", "key_1", "m", at)
	l.Append(events.StreamCompletion+"r", "acc_1", at, reserved("r"))
	l.Started("r", "acc_1", at.Add(time.Second)) // lease until at+1m1s
	projectionstest.HandleAll(t, set, l.All...)
	if ids, _ := jobs.ExpiredLeases(ctx, pool, at.Add(2*time.Minute), 10); !slices.Equal(ids, []string{"r"}) {
		t.Fatalf("expired before the requeue = %v", ids)
	}
	n := len(l.All)
	l.Append(events.StreamCompletion+"r", "acc_1", at.Add(2*time.Minute), requeued("r", "worker:test", at.Add(61*time.Second), 1))
	projectionstest.HandleAll(t, set, l.All[n:]...)
	if j := job("r"); j.status != jobs.JobQueued || j.executor != nil || j.lease != nil || j.started != nil || j.finished != nil {
		t.Errorf("after the requeue: %+v", j)
	}
	// A queued job is no reaper's business, however late it is.
	if ids, err := jobs.ExpiredLeases(ctx, pool, at.Add(24*time.Hour), 10); err != nil || len(ids) != 0 {
		t.Errorf("expired leases after the requeue = %v, %v; want none", ids, err)
	}
	// The reservation is still held.
	if r, rows := reservedNow(); r != 5000 || rows != 1 {
		t.Errorf("after the requeue: reserved %d in %d rows, want 5000 in 1", r, rows)
	}

	// The retry claims it (lease until at+13m), then succeeds and settles.
	n = len(l.All)
	l.Append(events.StreamCompletion+"r", "acc_1", at.Add(3*time.Minute), events.CompletionStarted{CompletionID: "r", Executor: "worker:w2", LeaseExpiresAt: at.Add(13 * time.Minute)})
	projectionstest.HandleAll(t, set, l.All[n:]...)
	j := job("r")
	if j.status != jobs.JobRunning || j.executor == nil || *j.executor != "worker:w2" || j.lease == nil || !j.lease.Equal(at.Add(13*time.Minute)) ||
		j.started == nil || !j.started.Equal(at.Add(3*time.Minute)) {
		t.Errorf("after the retry's claim: %+v", j)
	}
	if ids, _ := jobs.ExpiredLeases(ctx, pool, at.Add(12*time.Minute), 10); len(ids) != 0 {
		t.Errorf("expired while the retry's lease runs: %v", ids)
	}
	if ids, _ := jobs.ExpiredLeases(ctx, pool, at.Add(13*time.Minute), 10); !slices.Equal(ids, []string{"r"}) {
		t.Errorf("expired after the retry's lease = %v, want [r]", ids)
	}
	n = len(l.All)
	l.Succeeded("r", "acc_1", "key_1", "m", 10, 20, 3000, at.Add(4*time.Minute))
	l.Append(events.StreamCompletion+"r", "acc_1", at.Add(4*time.Minute), events.QuotaSettled{CompletionID: "r", AccountID: "acc_1", KeyID: "key_1",
		ReservedNanoUSD: 5000, CostNanoUSD: 3000, ReservedTokens: 100, Tokens: 30, Day: reserved("r").Day, Month: reserved("r").Month})
	projectionstest.HandleAll(t, set, l.All[n:]...)
	if j := job("r"); j.status != jobs.JobSucceeded || j.finished == nil {
		t.Errorf("after the retry's outcome: %+v", j)
	}
	if r, rows := reservedNow(); r != 0 || rows != 0 {
		t.Errorf("after settlement: reserved %d in %d rows, want 0 in 0", r, rows)
	}

	// q: requeue and the retry's claim in one batch (a catching-up
	// projector): the batch's last state wins.
	n = len(l.All)
	l.Requested("q", "acc_1", "key_1", "m", at)
	l.Started("q", "acc_1", at.Add(time.Second))
	l.Append(events.StreamCompletion+"q", "acc_1", at.Add(2*time.Minute), requeued("q", "worker:test", at.Add(61*time.Second), 1))
	l.Append(events.StreamCompletion+"q", "acc_1", at.Add(3*time.Minute), events.CompletionStarted{CompletionID: "q", Executor: "worker:w3", LeaseExpiresAt: at.Add(20 * time.Minute)})
	// p: already in the table, requeued and reclaimed within one batch.
	l.Requested("p", "acc_1", "key_1", "m", at)
	l.Started("p", "acc_1", at.Add(time.Second))
	if err := set.HandleBatch(ctx, l.All[n:]); err != nil {
		t.Fatal(err)
	}
	m := len(l.All)
	l.Append(events.StreamCompletion+"p", "acc_1", at.Add(2*time.Minute), requeued("p", "worker:test", at.Add(61*time.Second), 1))
	l.Append(events.StreamCompletion+"p", "acc_1", at.Add(3*time.Minute), events.CompletionStarted{CompletionID: "p", Executor: "worker:w4", LeaseExpiresAt: at.Add(30 * time.Minute)})
	if j := job("p"); j.status != jobs.JobRunning || *j.executor != "worker:test" {
		t.Fatalf("p before its requeue: %+v", j)
	}
	if err := set.HandleBatch(ctx, l.All[m:]); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"q": "worker:w3", "p": "worker:w4"} {
		if j := job(id); j.status != jobs.JobRunning || j.executor == nil || *j.executor != want || j.started == nil || !j.started.Equal(at.Add(3*time.Minute)) {
			t.Errorf("%s after a batch with requeue and claim: %+v", id, j)
		}
	}

	// Event times only: a rebuild is row for row the live model.
	if _, err := projections.Rebuild(ctx, pool, l.Store, "rebuild_requeue", 2, func(s string) []projections.Projector {
		return []projections.Projector{jobs.New(s), state.New(s)}
	}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []string{"jobs", "quota_state", "quota_reservations"} {
		live, rebuilt := dump(t, pool, projections.LiveSchema)[tb], dump(t, pool, "rebuild_requeue")[tb]
		if !slices.Equal(live, rebuilt) {
			t.Errorf("%s differ:\nlive    %v\nrebuilt %v", tb, live, rebuilt)
		}
	}
}

// Retries exhausted: the abandonment releases the reservation once (the
// completion.abandoned and the quota.released of one append).
func TestAbandonAfterRequeueReleasesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := projectionstest.NewLog(t, pool)
	set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, jobs.New(projections.LiveSchema), state.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	at := day0.Add(9 * time.Hour)
	day, month := at.Format("2006-01-02"), at.Format("2006-01")
	l.Requested("x", "acc_1", "key_1", "m", at)
	l.Append(events.StreamCompletion+"x", "acc_1", at, events.QuotaReserved{CompletionID: "x", AccountID: "acc_1", KeyID: "key_1",
		CostNanoUSD: 5000, Tokens: 100, Day: day, Month: month, ExpiresAt: at.Add(time.Hour)})
	l.Started("x", "acc_1", at.Add(time.Second))
	l.Append(events.StreamCompletion+"x", "acc_1", at.Add(2*time.Minute), events.CompletionRequeued{CompletionID: "x", AccountID: "acc_1", KeyID: "key_1",
		Model: "m", Executor: "worker:test", LeaseExpiresAt: at.Add(61 * time.Second), Retry: 1, Reason: "lease_expired"})
	l.Started("x", "acc_1", at.Add(3*time.Minute))
	l.Append(events.StreamCompletion+"x", "acc_1", at.Add(5*time.Minute),
		events.CompletionAbandoned{CompletionID: "x", AccountID: "acc_1", KeyID: "key_1", Model: "m", Executor: "worker:test",
			LeaseExpiresAt: at.Add(4 * time.Minute), Reason: "lease_expired"},
		events.QuotaReleased{CompletionID: "x", AccountID: "acc_1", KeyID: "key_1", ReservedNanoUSD: 5000, ReservedTokens: 100,
			Reason: events.ReleaseAbandoned, Day: day, Month: month})
	projectionstest.HandleAll(t, set, l.All...)
	rows, err := state.Of(ctx, pool, "acc_1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("quota_state %+v", rows)
	}
	for _, r := range rows {
		if r.Reserved != 0 || r.Spent != 0 {
			t.Errorf("%+v: want nothing reserved or spent", r)
		}
	}
	var status string
	if err := pool.QueryRow(ctx, `SELECT status FROM jobs WHERE completion_id = 'x'`).Scan(&status); err != nil || status != jobs.JobAbandoned {
		t.Errorf("job x = %q, %v", status, err)
	}
}
