package records_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

// The billing projector writes a transaction's completions with one
// statement per run between closes, flags and reports; whatever the
// batching, the billing tables must be row for row those of applying one
// event per transaction. The log mixes completions of a few accounts and
// windows, completions recorded twice, closes below the record's quantity
// (which split the excess into a new record), flags of closed records and
// reports, so that runs are cut in every way.
func TestBillingBatchesEqualOneByOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	if err := projections.CreateReadModels(ctx, pool, "batched"); err != nil {
		t.Fatal(err)
	}
	l := newLog(t, pool)
	one := newSet(t, pool, projections.LiveSchema)
	rng := rand.New(rand.NewPCG(9, 4))
	accounts := []string{"acc_0", "acc_1", "acc_2"}
	w0 := day0.Add(10 * time.Hour)
	var done []events.CompletionSucceeded
	var closes, flags, reports int
	for i := range 400 {
		a := accounts[rng.IntN(len(accounts))]
		switch r := rng.IntN(12); {
		case r < 8:
			id := fmt.Sprintf("c%d", i)
			e := l.Succeeded(id, a, "k", "m", rng.Int64N(100), rng.Int64N(100), 1, w0.Add(time.Duration(rng.Int64N(int64(3*time.Hour)))))
			handleAll(t, one, e)
			d, err := events.Decode(e)
			if err != nil {
				t.Fatal(err)
			}
			done = append(done, d.(events.CompletionSucceeded))
		case r == 8 && len(done) > 0:
			// A completion recorded again, under another event and stream.
			d := done[rng.IntN(len(done))]
			handleAll(t, one, l.Append("dup-"+fmt.Sprint(i), d.AccountID, w0, d)...)
		case r < 11:
			recs := recordsOf(t, pool, a)
			// Open records are closed or flagged; closed ones can be
			// flagged still.
			var open []billing.Record
			for _, rec := range recs {
				if rec.Status == billing.StatusOpen || rec.Status == billing.StatusClosed && r == 10 {
					open = append(open, rec)
				}
			}
			if len(open) == 0 {
				continue
			}
			rec := open[rng.IntN(len(open))]
			// The reporter read the quantity a while ago: some usage came
			// after it.
			q := rec.Quantity - rng.Int64N(rec.Quantity/2+1)
			at := rec.WindowEnd.Add(time.Duration(i) * time.Second)
			if r == 9 {
				handleAll(t, one, closed(l, rec, q, at))
				closes++
			} else {
				handleAll(t, one, l.Append(events.StreamBillingRecord+rec.RecordID, a, at, events.BillingRecordFlagged{
					RecordID: rec.RecordID, AccountID: a, WindowStart: rec.WindowStart, Quantity: q, Reason: events.FlagTooOld})...)
				flags++
			}
		default:
			// Mostly closed records; now and then an open one (a report
			// without its close applied first), which usage after it must
			// no longer be added to.
			want := billing.StatusClosed
			if rng.IntN(3) == 0 {
				want = billing.StatusOpen
			}
			for _, rec := range recordsOf(t, pool, a) {
				if rec.Status == want {
					handleAll(t, one, reported(l, rec, rec.Quantity, rec.WindowEnd.Add(time.Duration(i)*time.Second)))
					reports++
					break
				}
			}
		}
	}
	if closes == 0 || flags == 0 || reports == 0 {
		t.Fatalf("scenario too tame: %d closes, %d flags, %d reports", closes, flags, reports)
	}

	batched := newSet(t, pool, "batched")
	for rest := l.All; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(80))
		if err := batched.HandleBatch(ctx, rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	want, got := dump(t, pool, projections.LiveSchema), dump(t, pool, "batched")
	for _, tb := range []string{"billing_records", "billing_record_items"} {
		if !slices.Equal(want[tb], got[tb]) {
			t.Errorf("%s batched differs from one by one:\n got %v\nwant %v", tb, got[tb], want[tb])
		}
	}
	var splits int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM billing_records WHERE seq > 0`).Scan(&splits); err != nil || splits == 0 {
		t.Fatalf("no record past seq 0 (%v): nothing split", err)
	}
}
