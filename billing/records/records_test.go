package records_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

// TestRecordsReadModel is the billing part of the read models' scenario:
// completions of two accounts, a failure and a queued job.
func TestRecordsReadModel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	t1 := day0.Add(10*time.Hour + 5*time.Minute + 123456789)
	l.Append(events.StreamAccount+"acc_a", "acc_a", t1, events.AccountCreated{AccountID: "acc_a", Name: "A", Email: "a@x", Plan: "pro"},
		events.BillingCustomerLinked{AccountID: "acc_a", StripeCustomerID: "cus_a"})
	l.Complete("c1", "acc_a", "key_1", "gpt-small", 100, 20, 1_500, t1)
	l.Complete("c2", "acc_a", "key_1", "gpt-small", 10, 5, 300, t1.Add(10*time.Minute))
	l.Complete("c3", "acc_a", "key_2", "gpt-large", 1000, 200, 90_000, t1.Add(time.Hour))
	l.Requested("c4", "acc_a", "key_2", "gpt-large", t1.Add(2*time.Hour))
	l.Started("c4", "acc_a", t1.Add(2*time.Hour+time.Second))
	l.Failed("c4", "acc_a", "key_2", "gpt-large", t1.Add(2*time.Hour+3*time.Second))
	l.Requested("c5", "acc_a", "key_1", "gpt-small", t1.Add(3*time.Hour))
	l.Complete("c6", "acc_b", "key_9", "gpt-small", 7, 3, 50, day0.Add(24*time.Hour+time.Minute))

	s := newSet(t, pool, projections.LiveSchema)
	handleAll(t, s, l.Stored()...)

	// Billing: c1 and c2 in the 10:00 window, c3 in 11:00; failures bill nothing.
	recs := recordsOf(t, pool, "acc_a")
	w10 := day0.Add(10 * time.Hour)
	wantRecs := []billing.Record{
		{RecordID: billing.RecordID("acc_a", w10, 0), AccountID: "acc_a", WindowStart: w10, WindowEnd: w10.Add(time.Hour), Unit: billing.UnitTokens, Quantity: 135, Status: billing.StatusOpen},
		{RecordID: billing.RecordID("acc_a", w10.Add(time.Hour), 0), AccountID: "acc_a", WindowStart: w10.Add(time.Hour), WindowEnd: w10.Add(2 * time.Hour), Unit: billing.UnitTokens, Quantity: 1200, Status: billing.StatusOpen},
	}
	if !reflect.DeepEqual(recs, wantRecs) {
		t.Errorf("billing records = %+v\nwant %+v", recs, wantRecs)
	}
	var items int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM billing_record_items WHERE record_id = $1`, wantRecs[0].RecordID).Scan(&items); err != nil || items != 2 {
		t.Errorf("items of the 10:00 record = %d, %v; want 2", items, err)
	}

	// Due: nothing before the window has ended plus the delay.
	due, err := records.Due(ctx, pool, projections.LiveSchema, w10.Add(time.Hour+time.Minute), 5*time.Minute, 10)
	if err != nil || len(due) != 0 {
		t.Errorf("due before delay = %+v, %v; want none", due, err)
	}
	due, err = records.Due(ctx, pool, projections.LiveSchema, w10.Add(time.Hour+5*time.Minute), 5*time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].RecordID != wantRecs[0].RecordID {
		t.Errorf("due after delay = %+v, %v; want the 10:00 record", due, err)
	}
}

func TestBillingCostUnit(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := day0.Add(3 * time.Hour)
	l.Complete("c1", "acc_a", "key_1", "m", 100, 20, 1_500, at)
	l.Complete("c2", "acc_a", "key_1", "m", 100, 20, 0, at) // free: nothing to bill
	s, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, records.NewRecords(projections.LiveSchema, 24*time.Hour, billing.UnitCostNanoUSD))
	if err != nil {
		t.Fatal(err)
	}
	handleAll(t, s, l.Stored()...)
	recs := recordsOf(t, pool, "acc_a")
	if len(recs) != 1 || recs[0].Quantity != 1_500 || recs[0].Unit != billing.UnitCostNanoUSD || !recs[0].WindowStart.Equal(day0) {
		t.Errorf("records = %+v; want one of 1500 nano-USD from %s", recs, day0)
	}
}

func TestRedeliveryChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := day0.Add(9 * time.Hour)
	c1 := l.Complete("c1", "acc_a", "key_1", "m", 10, 10, 100, at)
	c2 := l.Complete("c2", "acc_a", "key_1", "m", 5, 5, 50, at.Add(time.Minute))
	s := newSet(t, pool, projections.LiveSchema)
	all := l.Stored()
	handleAll(t, s, all...)
	before := dump(t, pool, projections.LiveSchema)

	// Everything again, then old events after newer ones, one by one and
	// in a batch.
	handleAll(t, s, all...)
	handleAll(t, s, c1[0], c2[2], c1[2], c1[1])
	if err := s.HandleBatch(ctx, []events.Envelope{c2[0], c1[2], c2[1]}); err != nil {
		t.Fatal(err)
	}
	if after := dump(t, pool, projections.LiveSchema); !reflect.DeepEqual(before, after) {
		t.Errorf("redelivery changed the read models:\nbefore %v\nafter  %v", before, after)
	}
	var q int64
	if err := pool.QueryRow(ctx, `SELECT sum(quantity) FROM billing_records`).Scan(&q); err != nil || q != 30 {
		t.Errorf("billed = %d, %v; want 30", q, err)
	}
}

func TestBillingCloseSplitsLateUsage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	s := newSet(t, pool, projections.LiveSchema)
	handleAll(t, s, l.Append(events.StreamAccount+"acc_a", "acc_a", day0, events.BillingCustomerLinked{AccountID: "acc_a", StripeCustomerID: "cus_a"})...)
	w := day0.Add(14 * time.Hour)
	handleAll(t, s, l.Complete("c1", "acc_a", "k", "m", 60, 40, 1, w.Add(time.Minute))...)
	rec := recordsOf(t, pool, "acc_a")[0]
	if rec.Quantity != 100 || rec.Seq != 0 {
		t.Fatalf("record = %+v; want 100 at seq 0", rec)
	}
	// The reporter read 100; then c2 (50) arrived before its close applied.
	handleAll(t, s, l.Complete("c2", "acc_a", "k", "m", 30, 20, 1, w.Add(2*time.Minute))...)
	closedAt := w.Add(time.Hour + time.Minute)
	handleAll(t, s, closed(l, rec, 100, closedAt))
	handleAll(t, s, reported(l, rec, 100, closedAt.Add(time.Second)))

	recs := recordsOf(t, pool, "acc_a")
	reportedAt := closedAt.Add(time.Second)
	want := []billing.Record{
		{RecordID: rec.RecordID, AccountID: "acc_a", WindowStart: w, WindowEnd: w.Add(time.Hour), Seq: 0, Unit: billing.UnitTokens, Quantity: 100, Status: billing.StatusReported, ReportedAt: &reportedAt},
		{RecordID: billing.RecordID("acc_a", w, 1), AccountID: "acc_a", WindowStart: w, WindowEnd: w.Add(time.Hour), Seq: 1, Unit: billing.UnitTokens, Quantity: 50, Status: billing.StatusOpen},
	}
	if !reflect.DeepEqual(recs, want) {
		t.Fatalf("after split = %+v\nwant %+v", recs, want)
	}

	// Late usage of the same window goes to the open record seq 1; once it
	// is closed too, to a new record seq 2.
	handleAll(t, s, l.Complete("c3", "acc_a", "k", "m", 5, 5, 1, w.Add(59*time.Minute))...)
	recs = recordsOf(t, pool, "acc_a")
	if recs[1].Quantity != 60 || recs[0].Quantity != 100 {
		t.Fatalf("after late usage = %+v; want 100 reported and 60 open", recs)
	}
	handleAll(t, s, closed(l, recs[1], 60, closedAt.Add(time.Hour)))
	handleAll(t, s, l.Complete("c4", "acc_a", "k", "m", 1, 2, 1, w.Add(30*time.Minute))...)
	recs = recordsOf(t, pool, "acc_a")
	if len(recs) != 3 || recs[1].Status != billing.StatusClosed || recs[1].Quantity != 60 ||
		recs[2].Seq != 2 || recs[2].Status != billing.StatusOpen || recs[2].Quantity != 3 || recs[2].RecordID != billing.RecordID("acc_a", w, 2) {
		t.Fatalf("after usage on a closed record = %+v", recs)
	}
	var item string
	if err := pool.QueryRow(ctx, `SELECT record_id FROM billing_record_items WHERE completion_id = 'c4'`).Scan(&item); err != nil || item != recs[2].RecordID {
		t.Errorf("c4 billed to %s, %v; want %s", item, err, recs[2].RecordID)
	}

	// Due: the closed-but-unreported record at once, the open one after
	// its window and the delay; never the reported one.
	due, err := records.Due(ctx, pool, projections.LiveSchema, w.Add(30*time.Minute), time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].Seq != 1 {
		t.Errorf("due in the window = %+v, %v; want seq 1 (closed)", due, err)
	}
	due, err = records.Due(ctx, pool, projections.LiveSchema, w.Add(2*time.Hour), time.Minute, 10)
	if err != nil || len(due) != 2 || due[0].Seq != 1 || due[1].Seq != 2 {
		t.Errorf("due later = %+v, %v; want seq 1 and 2", due, err)
	}

	// Closing an unknown record is an error (redelivered later), not a loss.
	ghost := billing.Record{RecordID: "br_ghost", AccountID: "acc_a", WindowStart: w, WindowEnd: w.Add(time.Hour), Unit: billing.UnitTokens}
	if err := s.Handle(ctx, closed(l, ghost, 1, closedAt)); err == nil {
		t.Error("closing an unknown record: no error")
	}
}
