package state_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota/state"
)

// A renewal's new reservation end reaches quota_reservations (and so the
// limiter seeded from it), in the batch that reserves and in a later one;
// a reservation settled in the same batch stays gone.
func TestQuotaReservationFollowsRenewals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, state.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	ev := func(stream string, v int64, d events.Data) events.Envelope {
		e, err := events.New(stream, d, events.Metadata{AccountID: "acc_1"}, at, "")
		if err != nil {
			t.Fatal(err)
		}
		e.StreamVersion = v
		return e
	}
	res := func(id string) events.QuotaReserved {
		return events.QuotaReserved{CompletionID: id, AccountID: "acc_1", KeyID: "key_1", CostNanoUSD: 1000, Tokens: 10,
			Day: "2026-03-14", Month: "2026-03", ExpiresAt: at.Add(15 * time.Minute)}
	}
	renew := func(id string, n int, until time.Time) events.CompletionLeaseRenewed {
		return events.CompletionLeaseRenewed{CompletionID: id, Executor: "worker:w", LeaseExpiresAt: until.Add(-5 * time.Minute), Renewal: n,
			ReservationExpiresAt: until}
	}
	if err := set.HandleBatch(ctx, []events.Envelope{
		ev("completion-c", 1, res("c")), ev("completion-c", 2, renew("c", 1, at.Add(2*time.Hour))),
		ev("completion-d", 1, res("d")), ev("completion-d", 2, renew("d", 1, at.Add(2*time.Hour))),
		ev("completion-d", 3, events.QuotaSettled{CompletionID: "d", AccountID: "acc_1", KeyID: "key_1", ReservedNanoUSD: 1000,
			CostNanoUSD: 10, Day: "2026-03-14", Month: "2026-03"}),
	}); err != nil {
		t.Fatal(err)
	}
	if err := set.HandleBatch(ctx, []events.Envelope{ev("completion-c", 3, renew("c", 2, at.Add(3*time.Hour)))}); err != nil {
		t.Fatal(err)
	}
	snap, err := state.Seeder(pool)(ctx, "acc_1", at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Reservations) != 1 || snap.Reservations[0].ID != "c" || !snap.Reservations[0].ExpiresAt.Equal(at.Add(3*time.Hour)) {
		t.Fatalf("seeded reservations %+v; want c alone, held until %s", snap.Reservations, at.Add(3*time.Hour))
	}
}
