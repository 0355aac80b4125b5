package projections

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

// day0 is a Monday midnight UTC; the scenario's events are stamped from it,
// with nanoseconds, as real clocks give them.
var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func TestReadModels(t *testing.T) {
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

	s := newSet(t, pool, LiveSchema)
	handleAll(t, s, l.Stored()...)

	// Ledger and rollups.
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("ledger rows = %d, %v; want 4", n, err)
	}
	var occurred time.Time
	var upstream string
	if err := pool.QueryRow(ctx, `SELECT occurred_at, upstream_model FROM usage_ledger WHERE completion_id = 'c1'`).Scan(&occurred, &upstream); err != nil {
		t.Fatal(err)
	}
	if want := t1.Add(2 * time.Second).Truncate(time.Microsecond); !occurred.Equal(want) || upstream != "gpt-small-up" {
		t.Errorf("c1 ledger = %s %s; want %s gpt-small-up", occurred, upstream, want)
	}
	var req, pt, ct, cost int64
	if err := pool.QueryRow(ctx, `SELECT requests, prompt_tokens, completion_tokens, cost_nano_usd FROM usage_rollups
		WHERE account_id = 'acc_a' AND day = '2026-03-02' AND key_id = 'key_1' AND model = 'gpt-small'`).Scan(&req, &pt, &ct, &cost); err != nil {
		t.Fatal(err)
	}
	if req != 2 || pt != 110 || ct != 25 || cost != 1_800 {
		t.Errorf("rollup = %d %d %d %d; want 2 110 25 1800", req, pt, ct, cost)
	}

	// Usage, from the rollups (whole days) and from the ledger.
	u, err := Usage(ctx, pool, "acc_a", day0, day0.Add(24*time.Hour), "model")
	if err != nil {
		t.Fatal(err)
	}
	want := []UsageRow{{"gpt-large", 1, 1000, 200, 90_000}, {"gpt-small", 2, 110, 25, 1_800}}
	if !reflect.DeepEqual(u, want) {
		t.Errorf("usage by model = %+v; want %+v", u, want)
	}
	u, err = Usage(ctx, pool, "acc_a", t1, t1.Add(30*time.Minute), "key")
	if err != nil {
		t.Fatal(err)
	}
	if want := []UsageRow{{"key_1", 2, 110, 25, 1_800}}; !reflect.DeepEqual(u, want) {
		t.Errorf("usage by key in half an hour = %+v; want %+v", u, want)
	}
	u, err = Usage(ctx, pool, "acc_b", day0, day0.Add(72*time.Hour), "day")
	if err != nil {
		t.Fatal(err)
	}
	if want := []UsageRow{{"2026-03-03", 1, 7, 3, 50}}; !reflect.DeepEqual(u, want) {
		t.Errorf("usage by day = %+v; want %+v", u, want)
	}
	u, err = Usage(ctx, pool, "acc_b", day0, day0.Add(24*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []UsageRow{{}}; !reflect.DeepEqual(u, want) {
		t.Errorf("empty total = %+v; want one zero row", u)
	}
	u, err = Usage(ctx, pool, "acc_a", day0.Add(time.Hour), day0.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []UsageRow{{"", 3, 1110, 225, 91_800}}; !reflect.DeepEqual(u, want) {
		t.Errorf("total = %+v; want %+v", u, want)
	}
	if _, err := Usage(ctx, pool, "acc_a", day0, day0, "hour"); err == nil {
		t.Error("group by hour: no error")
	}

	// Jobs.
	jobs, err := ListJobs(ctx, pool, "acc_a", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 5 {
		t.Fatalf("jobs = %d; want 5", len(jobs))
	}
	if j := jobs[0]; j.CompletionID != "c5" || j.Status != JobQueued || j.StartedAt != nil || j.FinishedAt != nil || j.Mode != events.ModeAsync {
		t.Errorf("newest job = %+v; want c5 queued", j)
	}
	if j := jobs[1]; j.CompletionID != "c4" || j.Status != JobFailed || j.ErrorType != "upstream_error" ||
		j.ErrorMessage != "provider c4 down" || j.FinishedAt == nil || !j.FinishedAt.Equal(t1.Add(2*time.Hour+3*time.Second).Truncate(time.Microsecond)) {
		t.Errorf("failed job = %+v", j)
	}
	if j := jobs[4]; j.CompletionID != "c1" || j.Status != JobSucceeded || j.KeyID != "key_1" || j.Model != "gpt-small" ||
		!j.RequestedAt.Equal(t1.Truncate(time.Microsecond)) || !j.StartedAt.Equal(t1.Add(time.Second).Truncate(time.Microsecond)) {
		t.Errorf("first job = %+v", j)
	}

	// Billing: c1 and c2 in the 10:00 window, c3 in 11:00; failures bill nothing.
	recs := recordsOf(t, pool, "acc_a")
	w10 := day0.Add(10 * time.Hour)
	wantRecs := []BillingRecord{
		{RecordID: BillingRecordID("acc_a", w10, 0), AccountID: "acc_a", WindowStart: w10, WindowEnd: w10.Add(time.Hour), Unit: UnitTokens, Quantity: 135, Status: RecordOpen},
		{RecordID: BillingRecordID("acc_a", w10.Add(time.Hour), 0), AccountID: "acc_a", WindowStart: w10.Add(time.Hour), WindowEnd: w10.Add(2 * time.Hour), Unit: UnitTokens, Quantity: 1200, Status: RecordOpen},
	}
	if !reflect.DeepEqual(recs, wantRecs) {
		t.Errorf("billing records = %+v\nwant %+v", recs, wantRecs)
	}
	var items int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM billing_record_items WHERE record_id = $1`, wantRecs[0].RecordID).Scan(&items); err != nil || items != 2 {
		t.Errorf("items of the 10:00 record = %d, %v; want 2", items, err)
	}

	// Due: nothing before the window has ended plus the delay.
	due, err := DueBillingRecords(ctx, pool, LiveSchema, w10.Add(time.Hour+time.Minute), 5*time.Minute, 10)
	if err != nil || len(due) != 0 {
		t.Errorf("due before delay = %+v, %v; want none", due, err)
	}
	due, err = DueBillingRecords(ctx, pool, LiveSchema, w10.Add(time.Hour+5*time.Minute), 5*time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].RecordID != wantRecs[0].RecordID {
		t.Errorf("due after delay = %+v, %v; want the 10:00 record", due, err)
	}
	if got := counterValue(t, s.events.WithLabelValues(events.TypeCompletionSucceeded, "applied")); got != 4 {
		t.Errorf("applied succeeded events = %v; want 4", got)
	}
	if got := s.LastPosition(); got != l.All[len(l.All)-1].Position {
		t.Errorf("last position = %d; want %d", got, l.All[len(l.All)-1].Position)
	}
}

func TestBillingCostUnit(t *testing.T) {
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := day0.Add(3 * time.Hour)
	l.Complete("c1", "acc_a", "key_1", "m", 100, 20, 1_500, at)
	l.Complete("c2", "acc_a", "key_1", "m", 100, 20, 0, at) // free: nothing to bill
	s, err := NewSet(pool, LiveSchema, nil, nil, NewBillingRecords(LiveSchema, 24*time.Hour, UnitCostNanoUSD))
	if err != nil {
		t.Fatal(err)
	}
	handleAll(t, s, l.Stored()...)
	recs := recordsOf(t, pool, "acc_a")
	if len(recs) != 1 || recs[0].Quantity != 1_500 || recs[0].Unit != UnitCostNanoUSD || !recs[0].WindowStart.Equal(day0) {
		t.Errorf("records = %+v; want one of 1500 nano-USD from %s", recs, day0)
	}
}

func TestRedeliveryChangesNothing(t *testing.T) {
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := day0.Add(9 * time.Hour)
	c1 := l.Complete("c1", "acc_a", "key_1", "m", 10, 10, 100, at)
	c2 := l.Complete("c2", "acc_a", "key_1", "m", 5, 5, 50, at.Add(time.Minute))
	s := newSet(t, pool, LiveSchema)
	all := l.Stored()
	handleAll(t, s, all...)
	before := dump(t, pool, LiveSchema)

	// Everything again, then old events after newer ones, one by one and
	// in a batch.
	handleAll(t, s, all...)
	handleAll(t, s, c1[0], c2[2], c1[2], c1[1])
	if err := s.HandleBatch(ctx, []events.Envelope{c2[0], c1[2], c2[1]}); err != nil {
		t.Fatal(err)
	}
	if after := dump(t, pool, LiveSchema); !reflect.DeepEqual(before, after) {
		t.Errorf("redelivery changed the read models:\nbefore %v\nafter  %v", before, after)
	}
	if got := counterValue(t, s.events.WithLabelValues(events.TypeCompletionSucceeded, "skipped")); got != 5 {
		t.Errorf("skipped succeeded events = %v; want 5", got)
	}
	var q int64
	if err := pool.QueryRow(ctx, `SELECT sum(quantity) FROM billing_records`).Scan(&q); err != nil || q != 30 {
		t.Errorf("billed = %d, %v; want 30", q, err)
	}
}

func TestGapAppliesNothing(t *testing.T) {
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	at := day0.Add(9 * time.Hour)
	c1 := l.Complete("c1", "acc_a", "key_1", "m", 10, 10, 100, at)
	other := l.Complete("c2", "acc_a", "key_1", "m", 1, 1, 1, at)
	// A type this build does not know: not an error, the guard moves on.
	unknown := events.Envelope{EventID: events.DeriveID("future"), Type: "account.renamed", SchemaVersion: 1,
		OccurredAt: at, Data: []byte(`{}`), Metadata: events.Metadata{AccountID: "acc_a"}}
	if _, err := l.Store.Append(ctx, events.StreamAccount+"acc_a", 0, unknown); err != nil {
		t.Fatal(err)
	}
	s := newSet(t, pool, LiveSchema)
	handleAll(t, s, c1[0])
	before := dump(t, pool, LiveSchema)

	err := s.Handle(ctx, c1[2])
	var gap *GapError
	if !errors.Is(err, ErrGap) || !errors.As(err, &gap) || gap.Applied != 1 || gap.Got != 3 || gap.StreamID != "completion-c1" {
		t.Fatalf("handle v3 after v1 = %v; want a gap from 1 to 3", err)
	}
	// In a batch, a gap anywhere applies nothing, not even the events before it.
	if err := s.HandleBatch(ctx, append(other[:2:2], c1[2])); !errors.Is(err, ErrGap) {
		t.Fatalf("batch with a gap = %v; want ErrGap", err)
	}
	if after := dump(t, pool, LiveSchema); !reflect.DeepEqual(before, after) {
		t.Errorf("a gap changed the read models:\nbefore %v\nafter  %v", before, after)
	}
	// Once the missing event comes, the rest applies.
	handleAll(t, s, c1[1], c1[2])
	stored := l.Stored()
	handleAll(t, s, stored[len(stored)-1])
	var v int64
	if err := pool.QueryRow(ctx, `SELECT version FROM projection_streams WHERE projection = $1 AND stream_id = 'account-acc_a'`, SetName).Scan(&v); err != nil || v != 1 {
		t.Errorf("guard of the account stream = %d, %v; want 1", v, err)
	}
	jobs, err := ListJobs(ctx, pool, "acc_a", 0)
	if err != nil || len(jobs) != 1 || jobs[0].Status != JobSucceeded {
		t.Errorf("jobs = %+v, %v; want c1 succeeded", jobs, err)
	}
}

func TestBillingCloseSplitsLateUsage(t *testing.T) {
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	s := newSet(t, pool, LiveSchema)
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
	want := []BillingRecord{
		{RecordID: rec.RecordID, AccountID: "acc_a", WindowStart: w, WindowEnd: w.Add(time.Hour), Seq: 0, Unit: UnitTokens, Quantity: 100, Status: RecordReported, ReportedAt: &reportedAt},
		{RecordID: BillingRecordID("acc_a", w, 1), AccountID: "acc_a", WindowStart: w, WindowEnd: w.Add(time.Hour), Seq: 1, Unit: UnitTokens, Quantity: 50, Status: RecordOpen},
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
	if len(recs) != 3 || recs[1].Status != RecordClosed || recs[1].Quantity != 60 ||
		recs[2].Seq != 2 || recs[2].Status != RecordOpen || recs[2].Quantity != 3 || recs[2].RecordID != BillingRecordID("acc_a", w, 2) {
		t.Fatalf("after usage on a closed record = %+v", recs)
	}
	var item string
	if err := pool.QueryRow(ctx, `SELECT record_id FROM billing_record_items WHERE completion_id = 'c4'`).Scan(&item); err != nil || item != recs[2].RecordID {
		t.Errorf("c4 billed to %s, %v; want %s", item, err, recs[2].RecordID)
	}

	// Due: the closed-but-unreported record at once, the open one after
	// its window and the delay; never the reported one.
	due, err := DueBillingRecords(ctx, pool, LiveSchema, w.Add(30*time.Minute), time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].Seq != 1 {
		t.Errorf("due in the window = %+v, %v; want seq 1 (closed)", due, err)
	}
	due, err = DueBillingRecords(ctx, pool, LiveSchema, w.Add(2*time.Hour), time.Minute, 10)
	if err != nil || len(due) != 2 || due[0].Seq != 1 || due[1].Seq != 2 {
		t.Errorf("due later = %+v, %v; want seq 1 and 2", due, err)
	}

	// Closing an unknown record is an error (redelivered later), not a loss.
	ghost := BillingRecord{RecordID: "br_ghost", AccountID: "acc_a", WindowStart: w, WindowEnd: w.Add(time.Hour), Unit: UnitTokens}
	if err := s.Handle(ctx, closed(l, ghost, 1, closedAt)); err == nil {
		t.Error("closing an unknown record: no error")
	}
}

func TestBillingRecordIDMatchesSQL(t *testing.T) {
	pool, _ := pgtest.NewPool(t)
	ws := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	var got string
	if err := pool.QueryRow(context.Background(), `SELECT `+recordIDSQL("$1::text", rfc3339SQL("$2::timestamptz"), "$3::int"),
		"acc_é", ws, 7).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := BillingRecordID("acc_é", ws, 7); got != want || len(got) != 27 {
		t.Errorf("SQL id %s, Go id %s", got, want)
	}
}
