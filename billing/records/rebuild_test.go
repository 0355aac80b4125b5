package records_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/usage"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/projections/projectionstest"
)

// buildWithLedger is build with the usage ledger, which billing is checked
// against.
func buildWithLedger(schema string) []projections.Projector {
	return append(build(schema), usage.New(schema))
}

// TestLiveEqualsRebuild: the billing read models followed live, through a
// partitioned bus with redeliveries, are row for row a rebuild; and every
// billable token of the usage ledger is billed.
func TestLiveEqualsRebuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	rng := rand.New(rand.NewPCG(7, 11))
	bus := projectionstest.NewBus(t, newSet(t, pool, projections.LiveSchema, buildWithLedger(projections.LiveSchema)...), rng)

	accounts := []string{"acc_1", "acc_2", "acc_3", "acc_4", "acc_5"}
	models := []string{"small", "large", "mini"}
	for _, a := range accounts {
		l.Append(events.StreamAccount+a, a, day0, events.AccountCreated{AccountID: a, Name: a, Email: a + "@x", Plan: "pro"},
			events.BillingCustomerLinked{AccountID: a, StripeCustomerID: "cus_" + a})
		for k := range 2 {
			key := fmt.Sprintf("key_%s_%d", a, k)
			l.Append(events.StreamAPIKey+key, a, day0, events.APIKeyIssued{KeyID: key, AccountID: a, Name: key, KeyHash: key, KeyPrefix: "tg_"})
		}
	}
	seq := 0
	lateIn := func(r billing.Record) {
		seq++
		at := r.WindowStart.Add(time.Duration(rng.Int64N(int64(time.Hour - 3*time.Second))))
		l.Complete(fmt.Sprintf("late%d", seq), r.AccountID, "key_"+r.AccountID+"_0", "small", 1+rng.Int64N(50), 1+rng.Int64N(50), rng.Int64N(10_000), at)
	}
	for day := range 3 {
		// Completions of the day, their lifecycle steps interleaved.
		seq = l.Day(rng, seq, day0.Add(time.Duration(day)*24*time.Hour), accounts, models, 60)
		bus.Deliver(l.Stored())

		// Payments of the day: failures (some retried), payments and
		// downgrades, for the dunning read model; and now and then a
		// customer linked again to another account (the first link wins).
		for i, a := range accounts {
			at := day0.Add(time.Duration(day)*24*time.Hour + time.Duration(i)*time.Minute)
			stream := events.StreamAccount + a
			switch rng.IntN(4) {
			case 0:
				l.Append(stream, a, at, events.BillingPaymentFailed{AccountID: a, StripeCustomerID: "cus_" + a, InvoiceID: fmt.Sprintf("in_%d", day),
					GraceUntil: at.Add(time.Duration(1+rng.IntN(72)) * time.Hour), StripeEventID: fmt.Sprintf("evt_f%d%s", day, a), StripeCreated: at})
			case 1:
				l.Append(stream, a, at, events.BillingPaymentSucceeded{AccountID: a, StripeCustomerID: "cus_" + a, InvoiceID: fmt.Sprintf("in_%d", day),
					StripeEventID: fmt.Sprintf("evt_p%d%s", day, a), StripeCreated: at})
			case 2:
				l.Append(stream, a, at, events.AccountDowngraded{AccountID: a, FromPlan: "pro", ToPlan: "free", GraceUntil: at})
			}
			if rng.IntN(5) == 0 {
				other := accounts[rng.IntN(len(accounts))]
				l.Append(stream, a, at, events.BillingCustomerLinked{AccountID: a, StripeCustomerID: "cus_" + other})
			}
		}
		bus.Deliver(l.Stored())

		// The reporter: closes what is due (some after usage arrived late,
		// so the close splits), reports most of it, and late usage lands
		// in windows already closed.
		now := day0.Add(time.Duration(day+1) * 24 * time.Hour)
		due, err := records.Due(ctx, pool, projections.LiveSchema, now, 10*time.Minute, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range due {
			if r.Status == billing.StatusOpen {
				if i%3 == 0 {
					lateIn(r)
				}
				closed(l, r, r.Quantity, now.Add(time.Duration(i)*time.Second))
			}
			if i%4 != 1 {
				reported(l, r, r.Quantity, now.Add(time.Duration(i)*time.Second+time.Millisecond))
			}
			if i%5 == 2 {
				lateIn(r)
			}
		}
		bus.Deliver(l.Stored())
	}

	// The scenario did exercise what it is meant to.
	var splits, reported, closed int
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM billing_records WHERE seq > 0),
		(SELECT count(*) FROM billing_records WHERE status = 'reported'),
		(SELECT count(*) FROM billing_records WHERE status = 'closed')`).Scan(&splits, &reported, &closed); err != nil {
		t.Fatal(err)
	}
	if splits == 0 || reported == 0 || closed == 0 {
		t.Fatalf("scenario too tame: %d later records, %d reported, %d closed", splits, reported, closed)
	}
	var dunning, facts, relinked int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM billing_dunning), (SELECT count(*) FROM billing_record_facts),
		(SELECT count(*) FROM billing_customer_links WHERE stripe_customer_id <> 'cus_' || account_id)`).Scan(&dunning, &facts, &relinked); err != nil {
		t.Fatal(err)
	}
	if dunning == 0 || facts == 0 || relinked != 0 {
		t.Fatalf("%d accounts in dunning, %d records' facts, %d customers linked to a later account; want some, some, none", dunning, facts, relinked)
	}
	var billed, ledger int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT sum(quantity) FROM billing_records),
		(SELECT sum(prompt_tokens + completion_tokens) FROM usage_ledger WHERE prompt_tokens + completion_tokens > 0)`).Scan(&billed, &ledger); err != nil {
		t.Fatal(err)
	}
	if billed != ledger {
		t.Errorf("billed %d tokens, ledger has %d", billed, ledger)
	}

	// Twice: the second replaces the first, in batches that cut streams.
	for _, batch := range []int{1000, 7} {
		stats, err := projections.Rebuild(ctx, pool, l.Store, "rebuild", batch, buildWithLedger, nil)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Events != int64(len(l.All)) || stats.Cursor.Position != l.All[len(l.All)-1].Position {
			t.Errorf("rebuild read %d events up to %d; want %d up to %d", stats.Events, stats.Cursor.Position, len(l.All), l.All[len(l.All)-1].Position)
		}
		diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, "rebuild")
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) != 0 {
			t.Errorf("live and rebuild (batch %d) differ:\n%s", batch, strings.Join(diffs, "\n"))
		}
	}
	t.Logf("%d events: %d later records, %d reported, %d closed", len(l.All), splits, reported, closed)

	// Compare does see a difference.
	if _, err := pool.Exec(ctx, `UPDATE rebuild.billing_records SET quantity = quantity + 1 WHERE seq = 0`); err != nil {
		t.Fatal(err)
	}
	diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, "rebuild")
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 2 || !strings.HasPrefix(diffs[0], "billing_records: ") {
		t.Errorf("diffs = %q; want the changed records both ways", diffs)
	}
}
