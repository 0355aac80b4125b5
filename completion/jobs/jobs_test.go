package jobs_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/projections"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

func TestJobsLeaseAbandonAndCallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	set := newSet(t, pool, projections.LiveSchema)
	at := day0.Add(9 * time.Hour)
	withCB := func(id string) events.CompletionRequested {
		return events.CompletionRequested{CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeAsync,
			Request: json.RawMessage(`{"model":"m","callback_url":"https://hooks.example/` + id + `","messages":[]}`)}
	}
	// a: claimed, lease expired, abandoned, its callback failed.
	l.Append(events.StreamCompletion+"a", "acc_1", at, withCB("a"))
	l.Started("a", "acc_1", at.Add(time.Second)) // lease until at+1m1s
	// b: claimed, still running (lease until at+10m).
	l.Requested("b", "acc_1", "key_1", "m", at)
	l.Append(events.StreamCompletion+"b", "acc_1", at, events.CompletionStarted{CompletionID: "b", Executor: "worker:w2", LeaseExpiresAt: at.Add(10 * time.Minute)})
	// c: succeeded with a callback not sent yet; d: succeeded, callback delivered.
	l.Append(events.StreamCompletion+"c", "acc_1", at, withCB("c"))
	l.Started("c", "acc_1", at.Add(time.Second))
	l.Succeeded("c", "acc_1", "key_1", "m", 1, 1, 1, at.Add(2*time.Second))
	l.Append(events.StreamCompletion+"d", "acc_1", at, withCB("d"))
	l.Started("d", "acc_1", at.Add(time.Second))
	l.Succeeded("d", "acc_1", "key_1", "m", 1, 1, 1, at.Add(2*time.Second))
	l.Append(events.StreamCompletion+"d", "acc_1", at.Add(3*time.Second), events.CompletionCallbackDelivered{CompletionID: "d", URL: "https://hooks.example/d", Status: 200, Attempts: 1})

	// Before the reaper acts, a's lease has expired at at+2m but b's has not.
	handleAll(t, set, l.All...)
	expired, err := jobs.ExpiredLeases(ctx, pool, at.Add(2*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(expired, []string{"a"}) {
		t.Errorf("expired leases = %v, want [a]", expired)
	}
	pending, err := jobs.PendingCallbacks(ctx, pool, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pending, []string{"c"}) {
		t.Errorf("pending callbacks = %v, want [c]", pending)
	}

	// The reaper ends a; a becomes a pending callback, then a failed one.
	n := len(l.All)
	l.Append(events.StreamCompletion+"a", "acc_1", at.Add(3*time.Minute), events.CompletionAbandoned{
		CompletionID: "a", AccountID: "acc_1", KeyID: "key_1", Model: "m", Executor: "worker:test", LeaseExpiresAt: at.Add(61 * time.Second), Reason: "lease_expired"})
	handleAll(t, set, l.All[n:]...)
	if expired, _ = jobs.ExpiredLeases(ctx, pool, at.Add(time.Hour), 10); !slices.Equal(expired, []string{"b"}) {
		t.Errorf("after abandonment, expired leases at +1h = %v, want [b]", expired)
	}
	if pending, _ = jobs.PendingCallbacks(ctx, pool, 10); !slices.Equal(pending, []string{"c", "a"}) {
		t.Errorf("pending callbacks = %v, want [c a] (by finish time)", pending)
	}
	n = len(l.All)
	l.Append(events.StreamCompletion+"a", "acc_1", at.Add(4*time.Minute), events.CompletionCallbackFailed{CompletionID: "a", URL: "https://hooks.example/a", Attempts: 3, Error: "refused"})
	handleAll(t, set, l.All[n:]...)

	var status, cbStatus, cbURL, executor string
	var finished, lease time.Time
	if err := pool.QueryRow(ctx, `SELECT status, callback_status, callback_url, executor, finished_at, lease_expires_at FROM jobs WHERE completion_id = 'a'`).
		Scan(&status, &cbStatus, &cbURL, &executor, &finished, &lease); err != nil {
		t.Fatal(err)
	}
	if status != jobs.JobAbandoned || cbStatus != jobs.CallbackFailed || cbURL != "https://hooks.example/a" || executor != "worker:test" ||
		!finished.Equal(at.Add(3*time.Minute)) || !lease.Equal(at.Add(61*time.Second)) {
		t.Errorf("job a = %s %s %s %s %s %s", status, cbStatus, cbURL, executor, finished, lease)
	}
	if pending, _ = jobs.PendingCallbacks(ctx, pool, 10); !slices.Equal(pending, []string{"c"}) {
		t.Errorf("pending callbacks = %v, want [c]", pending)
	}

	// Event times only: a rebuild is row for row the live model.
	if _, err := projections.Rebuild(ctx, pool, l.Store, "rebuild_jobs", 3, buildAll, nil); err != nil {
		t.Fatal(err)
	}
	live, rebuilt := dump(t, pool, projections.LiveSchema)["jobs"], dump(t, pool, "rebuild_jobs")["jobs"]
	if !slices.Equal(live, rebuilt) || len(live) != 4 {
		t.Errorf("jobs differ:\nlive    %v\nrebuilt %v", live, rebuilt)
	}
}
