package completion_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/completion"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

func TestDecideRequeueCompletion(t *testing.T) {
	t.Parallel()
	requeue := func(now time.Time, maxRetries int, lease time.Duration) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideRequeueCompletion(c, completion.RequeueCompletion{Now: now, MaxRetries: maxRetries, Lease: lease})
		}
	}
	expiry := started.LeaseExpiresAt
	after := expiry.Add(time.Second)
	requeued := func(retry int, executor string, lease time.Time) events.CompletionRequeued {
		return events.CompletionRequeued{
			CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
			Executor: executor, LeaseExpiresAt: lease, Retry: retry, Reason: "lease_expired",
		}
	}
	// The retry's claim, by another worker, which dies too.
	restarted := events.CompletionStarted{CompletionID: "chatcmpl-abc123", Executor: "worker:w2", LeaseExpiresAt: expiry.Add(time.Hour)}
	sync := requested
	sync.Mode = events.ModeSync
	syncStarted := started
	syncStarted.Executor = "api:a1"
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "running, lease expired", Given: []events.Data{requested, started}, When: requeue(after, 2, time.Minute),
			Then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{Name: "running, lease ends now", Given: []events.Data{requested, started}, When: requeue(expiry, 2, time.Minute),
			Then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{Name: "second requeue counts on", Given: []events.Data{requested, started, requeued(1, "worker:w1", expiry), restarted},
			When: requeue(expiry.Add(2*time.Hour), 2, time.Minute), Then: []events.Data{requeued(2, "worker:w2", expiry.Add(time.Hour))}},
		{Name: "its reservation stays held", Given: []events.Data{requested, reserved, started}, When: requeue(after, 2, 10*time.Minute),
			Then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{Name: "lease still valid", Given: []events.Data{requested, started}, When: requeue(expiry.Add(-time.Nanosecond), 2, time.Minute), Err: domainerr.ErrWrongState},
		{Name: "requeued, not running", Given: []events.Data{requested, started, requeued(1, "worker:w1", expiry)}, When: requeue(expiry.Add(time.Hour), 2, time.Minute), Err: domainerr.ErrWrongState},
		{Name: "queued", Given: []events.Data{requested}, When: requeue(after, 2, time.Minute), Err: domainerr.ErrWrongState},
		{Name: "succeeded", Given: []events.Data{requested, started, succeeded}, When: requeue(after, 2, time.Minute), Err: domainerr.ErrWrongState},
		{Name: "abandoned", Given: []events.Data{requested, started, abandoned}, When: requeue(after, 2, time.Minute), Err: domainerr.ErrWrongState},
		{Name: "unknown", When: requeue(after, 2, time.Minute), Err: domainerr.ErrNotFound},
		{Name: "retries exhausted: the caller abandons", Given: []events.Data{requested, started, requeued(1, "worker:w1", expiry), restarted,
			requeued(2, "worker:w2", expiry.Add(time.Hour)), restarted}, When: requeue(expiry.Add(3*time.Hour), 2, time.Minute), Err: completion.ErrNoRetry},
		{Name: "no retries configured", Given: []events.Data{requested, started}, When: requeue(after, 0, time.Minute), Err: completion.ErrNoRetry},
		{Name: "synchronous: the caller abandons", Given: []events.Data{sync, syncStarted}, When: requeue(after, 2, time.Minute), Err: completion.ErrNoRetry},
		{Name: "reservation would expire during the retry", Given: []events.Data{requested, reserved, started},
			When: requeue(after, 2, reserved.ExpiresAt.Sub(after)+time.Nanosecond), Err: completion.ErrNoRetry},
		{Name: "reservation outlives the retry exactly", Given: []events.Data{requested, reserved, started},
			When: requeue(after, 2, reserved.ExpiresAt.Sub(after)), Then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{Name: "lease not positive", Given: []events.Data{requested, started}, When: requeue(after, 2, 0), Err: domainerr.ErrInvalid, Field: "lease"},
		{Name: "negative max retries", Given: []events.Data{requested, started}, When: requeue(after, -1, time.Minute), Err: domainerr.ErrInvalid, Field: "max_retries"},
	})
}

// A requeued completion is queued again, without its dead claim, with its
// reservation; the retry's claim and outcome work as on a first run, and
// the reservation is settled once, by the retry.
func TestRequeuedCompletionRunsAgainAndSettlesOnce(t *testing.T) {
	t.Parallel()
	expiry := started.LeaseExpiresAt
	rq := events.CompletionRequeued{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: expiry, Retry: 1, Reason: "lease_expired"}
	c, err := completion.FoldCompletion(decidetest.History(t, completion.CompletionStream("chatcmpl-abc123"), requested, reserved, started, rq))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != completion.StatusQueued || c.Executor != "" || !c.LeaseExpiresAt.IsZero() || !c.StartedAt.IsZero() || c.Retries != 1 ||
		c.Reservation == nil || c.Finished() || c.Version != 4 {
		t.Fatalf("after requeue: %+v", c)
	}
	// The dead executor cannot finish it any more.
	if _, err := completion.DecideFinishCompletion(c, completion.FinishCompletion{Executor: "worker:w1", Succeeded: &succeeded}); err == nil {
		t.Fatal("the dead executor finished a requeued completion")
	}
	// A second worker claims it.
	claim, err := completion.DecideStartCompletion(c, completion.StartCompletion{Executor: "worker:w2", Now: expiry.Add(time.Minute), Lease: time.Minute})
	if err != nil || len(claim) != 1 {
		t.Fatalf("claim after requeue: %v, %v", claim, err)
	}
	c, err = completion.FoldCompletion(decidetest.History(t, completion.CompletionStream("chatcmpl-abc123"), requested, reserved, started, rq, claim[0]))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != completion.StatusRunning || c.Executor != "worker:w2" || c.Retries != 1 {
		t.Fatalf("after the retry's claim: %+v", c)
	}
	out, err := completion.DecideFinishCompletion(c, completion.FinishCompletion{Executor: "worker:w2", Succeeded: &succeeded})
	if err != nil {
		t.Fatal(err)
	}
	var settled int
	for _, d := range out {
		switch d := d.(type) {
		case events.QuotaSettled:
			settled++
			if d.ReservedNanoUSD != reserved.CostNanoUSD || d.CostNanoUSD != succeeded.CostNanoUSD {
				t.Errorf("settled %+v", d)
			}
		case events.QuotaReleased:
			t.Errorf("released %+v", d)
		}
	}
	if settled != 1 {
		t.Errorf("%d settlements in %s, want 1", settled, decidetest.Dump(out))
	}
}
