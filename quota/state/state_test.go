package state_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/memory"
	"github.com/tollgate/tollgate/quota/state"
)

// The quota read models follow reservations, settlements, releases and
// abandonment, and seed a limiter with what is outstanding.
func TestQuotaStateAndSeeder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, state.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	ev := func(stream string, v int64, d events.Data, when time.Time) events.Envelope {
		e, err := events.New(stream, d, events.Metadata{AccountID: "acc_1"}, when, "")
		if err != nil {
			t.Fatal(err)
		}
		e.StreamVersion = v
		return e
	}
	res := func(id string, cost int64) events.QuotaReserved {
		return events.QuotaReserved{CompletionID: id, AccountID: "acc_1", KeyID: "key_1", CostNanoUSD: cost, Tokens: 100,
			Day: "2026-03-14", Month: "2026-03", ExpiresAt: at.Add(15 * time.Minute)}
	}
	batch := []events.Envelope{
		ev("completion-a", 1, res("a", 1000), at),
		ev("completion-b", 1, res("b", 2000), at),
		ev("completion-c", 1, res("c", 4000), at.Add(time.Second)),
		ev("completion-a", 2, events.QuotaSettled{CompletionID: "a", AccountID: "acc_1", KeyID: "key_1", ReservedNanoUSD: 1000,
			CostNanoUSD: 300, ReservedTokens: 100, Tokens: 10, Day: "2026-03-14", Month: "2026-03"}, at.Add(2*time.Second)),
		ev("completion-b", 2, events.QuotaReleased{CompletionID: "b", AccountID: "acc_1", KeyID: "key_1", ReservedNanoUSD: 2000,
			ReservedTokens: 100, Reason: events.ReleaseFailed, Day: "2026-03-14", Month: "2026-03"}, at.Add(2*time.Second)),
	}
	if err := set.HandleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	rows, err := state.Of(ctx, pool, "acc_1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if r.Spent != 300 || r.Reserved != 4000 {
			t.Errorf("row %+v: want spent 300, reserved 4000 (c outstanding)", r)
		}
	}
	snap, err := state.Seeder(pool)(ctx, "acc_1", at.Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if b := snap.Budgets["key:key_1"]["day:2026-03-14"]; b.Spent != 300 || b.Reserved != 4000 {
		t.Errorf("seed budget %+v", b)
	}
	if len(snap.Reservations) != 1 || snap.Reservations[0].ID != "c" || snap.Reservations[0].Cost != 4000 {
		t.Errorf("seed reservations %+v", snap.Reservations)
	}
	if w := snap.Windows["account"]; w[at.Unix()].Requests != 2 || w[at.Unix()+1].Requests != 1 || w[at.Unix()].Tokens != 200 {
		t.Errorf("seed window %+v", w)
	}
	// A seeded limiter enforces what the read model says.
	lim := memory.New(state.Seeder(pool))
	d, err := lim.Admit(ctx, quota.Admission{ID: "d", AccountID: "acc_1", KeyID: "key_1", Key: quota.Unlimited(),
		Account: quota.Limits{RequestsPerMinute: 3, DailyBudget: 10_000, MonthlyBudget: quota.NoBudget}, Cost: 5000, Now: at.Add(3 * time.Second), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Reason != quota.AccountRequestsPerMinute {
		t.Fatalf("seeded admission %+v", d)
	}
	// Abandonment releases c's reservation.
	if err := set.Handle(ctx, ev("completion-c", 2, events.CompletionAbandoned{CompletionID: "c", AccountID: "acc_1", KeyID: "key_1",
		Model: "m", Executor: "worker:w", LeaseExpiresAt: at, Reason: "lease_expired"}, at.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if rows, _ = state.Of(ctx, pool, "acc_1"); rows[0].Reserved != 0 {
		t.Fatalf("after abandonment %+v", rows)
	}
}
