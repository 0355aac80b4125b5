package state_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota/state"
)

// The quota projector sums a transaction's writes per row; whatever the
// batching, the read models must be row for row those of applying one
// event per transaction. The sequence mixes what makes that hard: a
// reservation released or settled in the batch that reserved it or in a
// later one, a release after a settlement, an abandonment followed by its
// release, a completion reserved twice (the first reservation stays),
// windows pruned by events more than two minutes apart and arriving out of
// time order, and limits changes.
func TestQuotaBatchesEqualOneByOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	if err := projections.CreateReadModels(ctx, pool, "batched"); err != nil {
		t.Fatal(err)
	}
	one, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, state.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	batched, err := projections.NewSet(pool, "batched", nil, nil, state.New("batched"))
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(3, 5))
	at0 := time.Date(2026, 3, 31, 23, 58, 0, 0, time.UTC)
	versions := map[string]int64{}
	var all []events.Envelope
	ev := func(stream string, d events.Data, when time.Time) {
		e, err := events.New(stream, d, events.Metadata{AccountID: "acc"}, when, "")
		if err != nil {
			t.Fatal(err)
		}
		versions[stream]++
		e.StreamVersion = versions[stream]
		all = append(all, e)
	}
	accounts := []string{"acc_1", "acc_2"}
	for _, a := range accounts {
		ev("account-"+a, events.AccountCreated{AccountID: a, Name: a, Email: a + "@x", Plan: "pro"}, at0)
		for k := range 2 {
			key := fmt.Sprintf("key_%s_%d", a, k)
			ev("apikey-"+key, events.APIKeyIssued{KeyID: key, AccountID: a, Name: key, KeyHash: key, KeyPrefix: "tg_"}, at0)
		}
	}
	type comp struct {
		id, account, key, day, month string
		at                           time.Time
		cost                         int64
	}
	var open []comp
	for i := range 400 {
		a := accounts[rng.IntN(len(accounts))]
		// Forward in time, each event up to four minutes late or early:
		// crosses a day and a month, and prunes (two minutes back) hit
		// seconds of the same batch exactly.
		at := at0.Add(time.Duration(i/2)*time.Second + time.Duration(rng.IntN(3))*2*time.Minute)
		c := comp{id: fmt.Sprintf("c%d", i), account: a, key: fmt.Sprintf("key_%s_%d", a, rng.IntN(2)),
			day: at.Format(time.DateOnly), month: at.Format("2006-01"), at: at, cost: 1 + rng.Int64N(10_000)}
		reserve := func(c comp, cost int64) {
			ev("completion-"+c.id, events.QuotaReserved{CompletionID: c.id, AccountID: c.account, KeyID: c.key, CostNanoUSD: cost,
				Tokens: 1 + rng.Int64N(100), Day: c.day, Month: c.month, ExpiresAt: c.at.Add(15 * time.Minute)}, c.at)
		}
		reserve(c, c.cost)
		if rng.IntN(20) == 0 {
			reserve(c, c.cost+1) // a second reservation of the same completion
		}
		open = append(open, c)
		// Finish a random open completion now and then.
		for len(open) > 0 && rng.IntN(3) > 0 {
			j := rng.IntN(len(open))
			o := open[j]
			open = slices.Delete(open, j, j+1)
			stream := "completion-" + o.id
			when := o.at.Add(time.Second)
			switch rng.IntN(4) {
			case 0:
				ev(stream, events.QuotaSettled{CompletionID: o.id, AccountID: o.account, KeyID: o.key, ReservedNanoUSD: o.cost,
					CostNanoUSD: o.cost / 2, ReservedTokens: 1, Tokens: 1, Day: o.day, Month: o.month}, when)
				if rng.IntN(2) == 0 {
					ev(stream, events.QuotaReleased{CompletionID: o.id, AccountID: o.account, KeyID: o.key, ReservedNanoUSD: o.cost,
						ReservedTokens: 1, Reason: events.ReleaseFailed, Day: o.day, Month: o.month}, when)
				}
			case 1:
				ev(stream, events.QuotaReleased{CompletionID: o.id, AccountID: o.account, KeyID: o.key, ReservedNanoUSD: o.cost,
					ReservedTokens: 1, Reason: events.ReleaseFailed, Day: o.day, Month: o.month}, when)
			case 2:
				ev(stream, events.CompletionAbandoned{CompletionID: o.id, AccountID: o.account, KeyID: o.key, Model: "m",
					Executor: "worker:w", LeaseExpiresAt: when, Reason: "lease_expired"}, when)
				ev(stream, events.QuotaReleased{CompletionID: o.id, AccountID: o.account, KeyID: o.key, ReservedNanoUSD: o.cost,
					ReservedTokens: 1, Reason: events.ReleaseFailed, Day: o.day, Month: o.month}, when)
			case 3:
				// Left outstanding.
				continue
			}
			if rng.IntN(8) == 0 {
				// Reserved again once finished (a retried completion id),
				// and released in turn.
				reserve(o, o.cost+7)
				ev(stream, events.QuotaReleased{CompletionID: o.id, AccountID: o.account, KeyID: o.key, ReservedNanoUSD: o.cost + 7,
					ReservedTokens: 1, Reason: events.ReleaseFailed, Day: o.day, Month: o.month}, when)
			}
		}
		if rng.IntN(50) == 0 {
			ev("account-"+a, events.AccountPlanChanged{AccountID: a, Plan: fmt.Sprintf("plan%d", i)}, at)
		}
	}

	// Compared after every batch: a wrong window row would otherwise be
	// pruned away by later events before the end.
	exercised := map[string]bool{}
	for rest := all; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(200))
		for _, e := range rest[:n] {
			if err := one.Handle(ctx, e); err != nil {
				t.Fatalf("handle %s %s v%d: %v", e.Type, e.StreamID, e.StreamVersion, err)
			}
		}
		if err := batched.HandleBatch(ctx, rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
		want, got := dump(t, pool, projections.LiveSchema), dump(t, pool, "batched")
		for _, tb := range []string{"quota_state", "quota_reservations", "quota_windows", "quota_limits"} {
			exercised[tb] = exercised[tb] || len(want[tb]) > 0
			if !slices.Equal(want[tb], got[tb]) {
				t.Fatalf("%s batched differs from one by one, %d events before the end:\n got %v\nwant %v", tb, len(rest), got[tb], want[tb])
			}
		}
	}
	for _, tb := range []string{"quota_state", "quota_reservations", "quota_windows", "quota_limits"} {
		if !exercised[tb] {
			t.Errorf("%s: never any rows: the test exercises nothing", tb)
		}
	}
	if diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, "batched"); err != nil || len(diffs) > 0 {
		t.Errorf("compare: %v %v", diffs, err)
	}
}
