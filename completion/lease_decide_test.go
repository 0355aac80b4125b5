package completion_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/completion"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

func renewed(n int, until time.Time) events.CompletionLeaseRenewed {
	return events.CompletionLeaseRenewed{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: until, Renewal: n}
}

func TestDecideRenewLease(t *testing.T) {
	t.Parallel()
	renew := func(executor string, now time.Time, lease time.Duration) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideRenewLease(c, completion.RenewLease{Executor: executor, Now: now, Lease: lease})
		}
	}
	expiry := started.LeaseExpiresAt // decidetest.T0 + 1m
	third := decidetest.T0.Add(20 * time.Second)
	requeued := events.CompletionRequeued{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: expiry, Retry: 1, Reason: "lease_expired"}
	restarted := events.CompletionStarted{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: expiry.Add(time.Hour)}
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "after a third of the lease", Given: []events.Data{requested, started}, When: renew("worker:w1", third, time.Minute),
			Then: []events.Data{renewed(1, third.Add(time.Minute))}},
		{Name: "renewals count on", Given: []events.Data{requested, started, renewed(1, third.Add(time.Minute))},
			When: renew("worker:w1", third.Add(20*time.Second), time.Minute), Then: []events.Data{renewed(2, third.Add(80*time.Second))}},
		{Name: "after the lease ended, no reaper having acted", Given: []events.Data{requested, started},
			When: renew("worker:w1", expiry.Add(time.Second), time.Minute), Then: []events.Data{renewed(1, expiry.Add(61*time.Second))}},
		{Name: "a retry's claim counts from one", Given: []events.Data{requested, started, renewed(1, third.Add(time.Minute)), requeued, restarted},
			When: renew("worker:w1", expiry.Add(time.Hour), 2*time.Hour), Then: []events.Data{renewed(1, expiry.Add(3*time.Hour))}},
		{Name: "a clock that went back renews nothing", Given: []events.Data{requested, started}, When: renew("worker:w1", decidetest.T0.Add(-time.Second), time.Minute), Then: nil},
		{Name: "another executor", Given: []events.Data{requested, started}, When: renew("worker:w2", third, time.Minute), Err: domainerr.ErrClaimLost},
		{Name: "abandoned by a reaper", Given: []events.Data{requested, started, abandoned}, When: renew("worker:w1", third, time.Minute), Err: domainerr.ErrClaimLost},
		{Name: "requeued by a reaper", Given: []events.Data{requested, started, requeued}, When: renew("worker:w1", third, time.Minute), Err: domainerr.ErrClaimLost},
		{Name: "succeeded", Given: []events.Data{requested, started, succeeded}, When: renew("worker:w1", third, time.Minute), Err: domainerr.ErrClaimLost},
		{Name: "failed", Given: []events.Data{requested, started, failed}, When: renew("worker:w1", third, time.Minute), Err: domainerr.ErrClaimLost},
		{Name: "queued", Given: []events.Data{requested}, When: renew("worker:w1", third, time.Minute), Err: domainerr.ErrClaimLost},
		{Name: "unknown", When: renew("worker:w1", third, time.Minute), Err: domainerr.ErrNotFound},
		{Name: "no executor", Given: []events.Data{requested, started}, When: renew("", third, time.Minute), Err: domainerr.ErrInvalid, Field: "executor"},
		{Name: "lease not positive", Given: []events.Data{requested, started}, When: renew("worker:w1", third, 0), Err: domainerr.ErrInvalid, Field: "lease"},
	})
}

// A reaper decides on the latest lease: a renewed claim is not ended
// until its renewed lease expired, and the event names that lease.
func TestRenewedLeaseFencesTheReaper(t *testing.T) {
	t.Parallel()
	until := decidetest.T0.Add(5 * time.Minute)
	abandon := func(now time.Time) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideAbandonCompletion(c, completion.AbandonCompletion{Now: now})
		}
	}
	requeue := func(now time.Time) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideRequeueCompletion(c, completion.RequeueCompletion{Now: now, MaxRetries: 2, Lease: time.Minute})
		}
	}
	late := abandoned
	late.LeaseExpiresAt = until
	finish := func(c completion.Completion) ([]events.Data, error) {
		return completion.DecideFinishCompletion(c, completion.FinishCompletion{Executor: "worker:w1", Succeeded: &succeeded})
	}
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "abandon past the first lease, within the renewed one", Given: []events.Data{requested, started, renewed(1, until)},
			When: abandon(started.LeaseExpiresAt.Add(time.Second)), Err: domainerr.ErrWrongState},
		{Name: "abandon past the renewed lease", Given: []events.Data{requested, started, renewed(1, until)},
			When: abandon(until), Then: []events.Data{late}},
		{Name: "requeue within the renewed lease", Given: []events.Data{requested, started, renewed(1, until)},
			When: requeue(until.Add(-time.Nanosecond)), Err: domainerr.ErrWrongState},
		{Name: "requeue past the renewed lease", Given: []events.Data{requested, started, renewed(1, until)},
			When: requeue(until.Add(time.Second)), Then: []events.Data{events.CompletionRequeued{CompletionID: "chatcmpl-abc123", AccountID: "acc_1",
				KeyID: "key_2", Model: "gpt-4o-mini", Executor: "worker:w1", LeaseExpiresAt: until, Retry: 1, Reason: "lease_expired"}}},
		{Name: "the holder finishes after renewals", Given: []events.Data{requested, started, renewed(1, until), renewed(2, until.Add(time.Minute))},
			When: finish, Then: []events.Data{succeeded}},
	})
}

// Through the store: the renewal is appended at the version the holder
// has, so a reaper that decided on the older version conflicts, and a
// renewal after the reaper's abandonment reports the claim lost.
// A renewal moves the budget reservation's end with the lease, keeping
// the margin it had at the claim, so a run that lasts hours keeps its
// reservation counted; the fold carries the new end.
func TestRenewalMovesTheReservation(t *testing.T) {
	t.Parallel()
	third := decidetest.T0.Add(20 * time.Second)
	renewWithMargin := func(margin time.Duration) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideRenewLease(c, completion.RenewLease{Executor: "worker:w1", Now: third, Lease: time.Minute, ReservationMargin: margin})
		}
	}
	moved := renewed(1, third.Add(time.Minute))
	moved.ReservationExpiresAt = third.Add(time.Minute + time.Hour)
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "with a reservation", Given: []events.Data{requested, reserved, started}, When: renewWithMargin(time.Hour),
			Then: []events.Data{moved}},
		{Name: "a reservation that ends later already stays", Given: []events.Data{requested, reserved, started},
			When: renewWithMargin(time.Second), Then: []events.Data{renewed(1, third.Add(time.Minute))}},
		{Name: "without a reservation", Given: []events.Data{requested, started}, When: renewWithMargin(time.Hour),
			Then: []events.Data{renewed(1, third.Add(time.Minute))}},
	})
	evs := []events.Data{requested, reserved, started, moved}
	var envs []events.Envelope
	for i, d := range evs {
		e, err := events.New(completion.CompletionStream(requested.CompletionID), d, events.Metadata{AccountID: "acc_1"}, decidetest.T0, "")
		if err != nil {
			t.Fatal(err)
		}
		e.StreamVersion = int64(i + 1)
		envs = append(envs, e)
	}
	c, err := completion.FoldCompletion(envs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reservation == nil || !c.Reservation.ExpiresAt.Equal(moved.ReservationExpiresAt) || !reserved.ExpiresAt.Before(c.Reservation.ExpiresAt) {
		t.Fatalf("folded reservation %+v, want it to end at %s", c.Reservation, moved.ReservationExpiresAt)
	}
}
