package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/decidetest"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

func TestServiceAbandonExpiredOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, store := newService(t)
	md := events.Metadata{CorrelationID: "req_1", Actor: "key:key_2"}
	if _, err := svc.RequestCompletion(ctx, md, requestCmd("chatcmpl-reap1", events.ModeAsync), nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	c, err := svc.StartCompletion(ctx, md, "chatcmpl-reap1", completion.StartCompletion{Executor: "worker:dead", Now: now, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// Before the lease ends nothing happens.
	if _, mine, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_0", Actor: "reaper:a"}, c.ID, completion.AbandonCompletion{Now: now.Add(59 * time.Second)}); !errors.Is(err, domainerr.ErrWrongState) || mine {
		t.Fatalf("abandon before expiry: mine %v err %v, want domainerr.ErrWrongState", mine, err)
	}
	// Eight reapers at once after it: one event, one of them stored it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	mineCount := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, mine, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_" + string(rune('a'+i)), Actor: "reaper:r"}, c.ID,
				completion.AbandonCompletion{Now: now.Add(2 * time.Minute)})
			if err != nil && !errors.Is(err, domainerr.ErrWrongState) && !errors.Is(err, events.ErrConflict) {
				t.Errorf("reaper %d: %v", i, err)
			}
			if mine {
				mu.Lock()
				mineCount++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	evs, err := store.Load(ctx, completion.CompletionStream(c.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got := types(evs); len(got) != 3 || got[2] != "3:"+events.TypeCompletionAbandoned {
		t.Fatalf("stream = %v, want requested, started, abandoned", got)
	}
	if mineCount != 1 {
		t.Errorf("%d reapers report they stored the event, want 1", mineCount)
	}
	// The dead executor's late outcome is refused: nothing is billed.
	_, err = svc.FinishClaimed(ctx, md, c, completion.FinishCompletion{Executor: "worker:dead", Succeeded: &events.CompletionSucceeded{Provider: "p", UpstreamModel: "u", Response: json.RawMessage(`{}`)}})
	if !errors.Is(err, events.ErrConflict) {
		t.Errorf("late finish: err = %v, want a conflict", err)
	}
}

func TestRenewClaimRacesTheReaper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, store := newService(t)
	request := func(id string) completion.Completion {
		t.Helper()
		c, err := svc.RequestCompletion(ctx, events.Metadata{AccountID: "acc_1"}, completion.RequestCompletion{
			CompletionID: id, AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini", Mode: events.ModeSync,
			Request: json.RawMessage(`{"model":"gpt-4o-mini","messages":[]}`),
		}, &completion.StartCompletion{Executor: "api:a1", Now: decidetest.T0, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The holder renews; then a reaper past the first lease finds the
	// claim still valid.
	c := request("chatcmpl-renewed")
	c, err := svc.RenewClaim(ctx, events.Metadata{}, c, completion.RenewLease{Executor: "api:a1", Now: decidetest.T0.Add(30 * time.Second), Lease: time.Minute})
	if err != nil || c.Renewals != 1 || !c.LeaseExpiresAt.Equal(decidetest.T0.Add(90*time.Second)) || c.Version != 3 {
		t.Fatalf("renew: %+v, %v", c, err)
	}
	// The same renewal again (a retry after a lost answer) stores nothing new.
	again, err := svc.RenewClaim(ctx, events.Metadata{}, completion.Completion{ID: c.ID, AccountID: c.AccountID, Status: completion.StatusRunning,
		Executor: "api:a1", LeaseExpiresAt: decidetest.T0.Add(time.Minute), Version: 2}, completion.RenewLease{Executor: "api:a1", Now: decidetest.T0.Add(30 * time.Second), Lease: time.Minute})
	if err != nil || again.Version != 3 {
		t.Fatalf("retried renewal: %+v, %v", again, err)
	}
	if _, _, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_1"}, c.ID, completion.AbandonCompletion{Now: decidetest.T0.Add(61 * time.Second)}); !errors.Is(err, domainerr.ErrWrongState) {
		t.Fatalf("abandon within the renewed lease: %v", err)
	}
	// A reaper that acted on an expired lease wins; the holder's renewal
	// then finds its claim lost, and so does its outcome.
	c2 := request("chatcmpl-reaped")
	if _, mine, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_2"}, c2.ID, completion.AbandonCompletion{Now: decidetest.T0.Add(61 * time.Second)}); err != nil || !mine {
		t.Fatalf("abandon: %v %v", mine, err)
	}
	if _, err := svc.RenewClaim(ctx, events.Metadata{}, c2, completion.RenewLease{Executor: "api:a1", Now: decidetest.T0.Add(62 * time.Second), Lease: time.Minute}); !errors.Is(err, domainerr.ErrClaimLost) || !errors.Is(err, events.ErrConflict) {
		t.Fatalf("renewal after abandonment: %v, want domainerr.ErrClaimLost", err)
	}
	evs, err := store.Load(ctx, completion.CompletionStream(c2.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got := types(evs); len(evs) != 3 || evs[2].Type != events.TypeCompletionAbandoned {
		t.Fatalf("stream after the race: %v", got)
	}
}
