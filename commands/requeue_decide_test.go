package commands_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
)

func TestDecideRequeueCompletion(t *testing.T) {
	requeue := func(now time.Time, maxRetries int, lease time.Duration) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideRequeueCompletion(c, commands.RequeueCompletion{Now: now, MaxRetries: maxRetries, Lease: lease})
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
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "running, lease expired", given: []events.Data{requested, started}, when: requeue(after, 2, time.Minute),
			then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{name: "running, lease ends now", given: []events.Data{requested, started}, when: requeue(expiry, 2, time.Minute),
			then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{name: "second requeue counts on", given: []events.Data{requested, started, requeued(1, "worker:w1", expiry), restarted},
			when: requeue(expiry.Add(2*time.Hour), 2, time.Minute), then: []events.Data{requeued(2, "worker:w2", expiry.Add(time.Hour))}},
		{name: "its reservation stays held", given: []events.Data{requested, reserved, started}, when: requeue(after, 2, 10*time.Minute),
			then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{name: "lease still valid", given: []events.Data{requested, started}, when: requeue(expiry.Add(-time.Nanosecond), 2, time.Minute), err: commands.ErrWrongState},
		{name: "requeued, not running", given: []events.Data{requested, started, requeued(1, "worker:w1", expiry)}, when: requeue(expiry.Add(time.Hour), 2, time.Minute), err: commands.ErrWrongState},
		{name: "queued", given: []events.Data{requested}, when: requeue(after, 2, time.Minute), err: commands.ErrWrongState},
		{name: "succeeded", given: []events.Data{requested, started, succeeded}, when: requeue(after, 2, time.Minute), err: commands.ErrWrongState},
		{name: "abandoned", given: []events.Data{requested, started, abandoned}, when: requeue(after, 2, time.Minute), err: commands.ErrWrongState},
		{name: "unknown", when: requeue(after, 2, time.Minute), err: commands.ErrNotFound},
		{name: "retries exhausted: the caller abandons", given: []events.Data{requested, started, requeued(1, "worker:w1", expiry), restarted,
			requeued(2, "worker:w2", expiry.Add(time.Hour)), restarted}, when: requeue(expiry.Add(3*time.Hour), 2, time.Minute), err: commands.ErrNoRetry},
		{name: "no retries configured", given: []events.Data{requested, started}, when: requeue(after, 0, time.Minute), err: commands.ErrNoRetry},
		{name: "synchronous: the caller abandons", given: []events.Data{sync, syncStarted}, when: requeue(after, 2, time.Minute), err: commands.ErrNoRetry},
		{name: "reservation would expire during the retry", given: []events.Data{requested, reserved, started},
			when: requeue(after, 2, reserved.ExpiresAt.Sub(after)+time.Nanosecond), err: commands.ErrNoRetry},
		{name: "reservation outlives the retry exactly", given: []events.Data{requested, reserved, started},
			when: requeue(after, 2, reserved.ExpiresAt.Sub(after)), then: []events.Data{requeued(1, "worker:w1", expiry)}},
		{name: "lease not positive", given: []events.Data{requested, started}, when: requeue(after, 2, 0), err: commands.ErrInvalid, field: "lease"},
		{name: "negative max retries", given: []events.Data{requested, started}, when: requeue(after, -1, time.Minute), err: commands.ErrInvalid, field: "max_retries"},
	})
}

// A requeued completion is queued again, without its dead claim, with its
// reservation; the retry's claim and outcome work as on a first run, and
// the reservation is settled once, by the retry.
func TestRequeuedCompletionRunsAgainAndSettlesOnce(t *testing.T) {
	expiry := started.LeaseExpiresAt
	rq := events.CompletionRequeued{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: expiry, Retry: 1, Reason: "lease_expired"}
	c, err := commands.FoldCompletion(history(t, commands.CompletionStream("chatcmpl-abc123"), requested, reserved, started, rq))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != commands.StatusQueued || c.Executor != "" || !c.LeaseExpiresAt.IsZero() || !c.StartedAt.IsZero() || c.Retries != 1 ||
		c.Reservation == nil || c.Finished() || c.Version != 4 {
		t.Fatalf("after requeue: %+v", c)
	}
	// The dead executor cannot finish it any more.
	if _, err := commands.DecideFinishCompletion(c, commands.FinishCompletion{Executor: "worker:w1", Succeeded: &succeeded}); err == nil {
		t.Fatal("the dead executor finished a requeued completion")
	}
	// A second worker claims it.
	claim, err := commands.DecideStartCompletion(c, commands.StartCompletion{Executor: "worker:w2", Now: expiry.Add(time.Minute), Lease: time.Minute})
	if err != nil || len(claim) != 1 {
		t.Fatalf("claim after requeue: %v, %v", claim, err)
	}
	c, err = commands.FoldCompletion(history(t, commands.CompletionStream("chatcmpl-abc123"), requested, reserved, started, rq, claim[0]))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != commands.StatusRunning || c.Executor != "worker:w2" || c.Retries != 1 {
		t.Fatalf("after the retry's claim: %+v", c)
	}
	out, err := commands.DecideFinishCompletion(c, commands.FinishCompletion{Executor: "worker:w2", Succeeded: &succeeded})
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
		t.Errorf("%d settlements in %s, want 1", settled, dump(out))
	}
}
