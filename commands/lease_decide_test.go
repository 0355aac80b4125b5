package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
)

func renewed(n int, until time.Time) events.CompletionLeaseRenewed {
	return events.CompletionLeaseRenewed{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: until, Renewal: n}
}

func TestDecideRenewLease(t *testing.T) {
	renew := func(executor string, now time.Time, lease time.Duration) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideRenewLease(c, commands.RenewLease{Executor: executor, Now: now, Lease: lease})
		}
	}
	expiry := started.LeaseExpiresAt // t0 + 1m
	third := t0.Add(20 * time.Second)
	requeued := events.CompletionRequeued{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: expiry, Retry: 1, Reason: "lease_expired"}
	restarted := events.CompletionStarted{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: expiry.Add(time.Hour)}
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "after a third of the lease", given: []events.Data{requested, started}, when: renew("worker:w1", third, time.Minute),
			then: []events.Data{renewed(1, third.Add(time.Minute))}},
		{name: "renewals count on", given: []events.Data{requested, started, renewed(1, third.Add(time.Minute))},
			when: renew("worker:w1", third.Add(20*time.Second), time.Minute), then: []events.Data{renewed(2, third.Add(80*time.Second))}},
		{name: "after the lease ended, no reaper having acted", given: []events.Data{requested, started},
			when: renew("worker:w1", expiry.Add(time.Second), time.Minute), then: []events.Data{renewed(1, expiry.Add(61*time.Second))}},
		{name: "a retry's claim counts from one", given: []events.Data{requested, started, renewed(1, third.Add(time.Minute)), requeued, restarted},
			when: renew("worker:w1", expiry.Add(time.Hour), 2*time.Hour), then: []events.Data{renewed(1, expiry.Add(3*time.Hour))}},
		{name: "a clock that went back renews nothing", given: []events.Data{requested, started}, when: renew("worker:w1", t0.Add(-time.Second), time.Minute), then: nil},
		{name: "another executor", given: []events.Data{requested, started}, when: renew("worker:w2", third, time.Minute), err: commands.ErrClaimLost},
		{name: "abandoned by a reaper", given: []events.Data{requested, started, abandoned}, when: renew("worker:w1", third, time.Minute), err: commands.ErrClaimLost},
		{name: "requeued by a reaper", given: []events.Data{requested, started, requeued}, when: renew("worker:w1", third, time.Minute), err: commands.ErrClaimLost},
		{name: "succeeded", given: []events.Data{requested, started, succeeded}, when: renew("worker:w1", third, time.Minute), err: commands.ErrClaimLost},
		{name: "failed", given: []events.Data{requested, started, failed}, when: renew("worker:w1", third, time.Minute), err: commands.ErrClaimLost},
		{name: "queued", given: []events.Data{requested}, when: renew("worker:w1", third, time.Minute), err: commands.ErrClaimLost},
		{name: "unknown", when: renew("worker:w1", third, time.Minute), err: commands.ErrNotFound},
		{name: "no executor", given: []events.Data{requested, started}, when: renew("", third, time.Minute), err: commands.ErrInvalid, field: "executor"},
		{name: "lease not positive", given: []events.Data{requested, started}, when: renew("worker:w1", third, 0), err: commands.ErrInvalid, field: "lease"},
	})
}

// A reaper decides on the latest lease: a renewed claim is not ended
// until its renewed lease expired, and the event names that lease.
func TestRenewedLeaseFencesTheReaper(t *testing.T) {
	until := t0.Add(5 * time.Minute)
	abandon := func(now time.Time) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideAbandonCompletion(c, commands.AbandonCompletion{Now: now})
		}
	}
	requeue := func(now time.Time) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideRequeueCompletion(c, commands.RequeueCompletion{Now: now, MaxRetries: 2, Lease: time.Minute})
		}
	}
	late := abandoned
	late.LeaseExpiresAt = until
	finish := func(c commands.Completion) ([]events.Data, error) {
		return commands.DecideFinishCompletion(c, commands.FinishCompletion{Executor: "worker:w1", Succeeded: &succeeded})
	}
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "abandon past the first lease, within the renewed one", given: []events.Data{requested, started, renewed(1, until)},
			when: abandon(started.LeaseExpiresAt.Add(time.Second)), err: commands.ErrWrongState},
		{name: "abandon past the renewed lease", given: []events.Data{requested, started, renewed(1, until)},
			when: abandon(until), then: []events.Data{late}},
		{name: "requeue within the renewed lease", given: []events.Data{requested, started, renewed(1, until)},
			when: requeue(until.Add(-time.Nanosecond)), err: commands.ErrWrongState},
		{name: "requeue past the renewed lease", given: []events.Data{requested, started, renewed(1, until)},
			when: requeue(until.Add(time.Second)), then: []events.Data{events.CompletionRequeued{CompletionID: "chatcmpl-abc123", AccountID: "acc_1",
				KeyID: "key_2", Model: "gpt-4o-mini", Executor: "worker:w1", LeaseExpiresAt: until, Retry: 1, Reason: "lease_expired"}}},
		{name: "the holder finishes after renewals", given: []events.Data{requested, started, renewed(1, until), renewed(2, until.Add(time.Minute))},
			when: finish, then: []events.Data{succeeded}},
	})
}

// Through the store: the renewal is appended at the version the holder
// has, so a reaper that decided on the older version conflicts, and a
// renewal after the reaper's abandonment reports the claim lost.
func TestRenewClaimRacesTheReaper(t *testing.T) {
	ctx := context.Background()
	svc, store := newService(t)
	request := func(id string) commands.Completion {
		t.Helper()
		c, err := svc.RequestCompletion(ctx, events.Metadata{AccountID: "acc_1"}, commands.RequestCompletion{
			CompletionID: id, AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini", Mode: events.ModeSync,
			Request: json.RawMessage(`{"model":"gpt-4o-mini","messages":[]}`),
		}, &commands.StartCompletion{Executor: "api:a1", Now: t0, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The holder renews; then a reaper past the first lease finds the
	// claim still valid.
	c := request("chatcmpl-renewed")
	c, err := svc.RenewClaim(ctx, events.Metadata{}, c, commands.RenewLease{Executor: "api:a1", Now: t0.Add(30 * time.Second), Lease: time.Minute})
	if err != nil || c.Renewals != 1 || !c.LeaseExpiresAt.Equal(t0.Add(90*time.Second)) || c.Version != 3 {
		t.Fatalf("renew: %+v, %v", c, err)
	}
	// The same renewal again (a retry after a lost answer) stores nothing new.
	again, err := svc.RenewClaim(ctx, events.Metadata{}, commands.Completion{ID: c.ID, AccountID: c.AccountID, Status: commands.StatusRunning,
		Executor: "api:a1", LeaseExpiresAt: t0.Add(time.Minute), Version: 2}, commands.RenewLease{Executor: "api:a1", Now: t0.Add(30 * time.Second), Lease: time.Minute})
	if err != nil || again.Version != 3 {
		t.Fatalf("retried renewal: %+v, %v", again, err)
	}
	if _, _, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_1"}, c.ID, commands.AbandonCompletion{Now: t0.Add(61 * time.Second)}); !errors.Is(err, commands.ErrWrongState) {
		t.Fatalf("abandon within the renewed lease: %v", err)
	}
	// A reaper that acted on an expired lease wins; the holder's renewal
	// then finds its claim lost, and so does its outcome.
	c2 := request("chatcmpl-reaped")
	if _, mine, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_2"}, c2.ID, commands.AbandonCompletion{Now: t0.Add(61 * time.Second)}); err != nil || !mine {
		t.Fatalf("abandon: %v %v", mine, err)
	}
	if _, err := svc.RenewClaim(ctx, events.Metadata{}, c2, commands.RenewLease{Executor: "api:a1", Now: t0.Add(62 * time.Second), Lease: time.Minute}); !errors.Is(err, commands.ErrClaimLost) || !errors.Is(err, events.ErrConflict) {
		t.Fatalf("renewal after abandonment: %v, want ErrClaimLost", err)
	}
	evs, err := store.Load(ctx, commands.CompletionStream(c2.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got := types(evs); len(evs) != 3 || evs[2].Type != events.TypeCompletionAbandoned {
		t.Fatalf("stream after the race: %v", got)
	}
}

// A renewal moves the budget reservation's end with the lease, keeping
// the margin it had at the claim, so a run that lasts hours keeps its
// reservation counted; the fold carries the new end.
func TestRenewalMovesTheReservation(t *testing.T) {
	third := t0.Add(20 * time.Second)
	renewWithMargin := func(margin time.Duration) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideRenewLease(c, commands.RenewLease{Executor: "worker:w1", Now: third, Lease: time.Minute, ReservationMargin: margin})
		}
	}
	moved := renewed(1, third.Add(time.Minute))
	moved.ReservationExpiresAt = third.Add(time.Minute + time.Hour)
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "with a reservation", given: []events.Data{requested, reserved, started}, when: renewWithMargin(time.Hour),
			then: []events.Data{moved}},
		{name: "a reservation that ends later already stays", given: []events.Data{requested, reserved, started},
			when: renewWithMargin(time.Second), then: []events.Data{renewed(1, third.Add(time.Minute))}},
		{name: "without a reservation", given: []events.Data{requested, started}, when: renewWithMargin(time.Hour),
			then: []events.Data{renewed(1, third.Add(time.Minute))}},
	})
	evs := []events.Data{requested, reserved, started, moved}
	var envs []events.Envelope
	for i, d := range evs {
		e, err := events.New(commands.CompletionStream(requested.CompletionID), d, events.Metadata{AccountID: "acc_1"}, t0, "")
		if err != nil {
			t.Fatal(err)
		}
		e.StreamVersion = int64(i + 1)
		envs = append(envs, e)
	}
	c, err := commands.FoldCompletion(envs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reservation == nil || !c.Reservation.ExpiresAt.Equal(moved.ReservationExpiresAt) || !reserved.ExpiresAt.Before(c.Reservation.ExpiresAt) {
		t.Fatalf("folded reservation %+v, want it to end at %s", c.Reservation, moved.ReservationExpiresAt)
	}
}
