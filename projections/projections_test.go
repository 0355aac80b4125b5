package projections_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/usage"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

// day0 is a Monday midnight UTC; the scenario's events are stamped from it,
// with nanoseconds, as real clocks give them.
var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func TestReadModels(t *testing.T) {
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
	u, err := usage.Query(ctx, pool, "acc_a", day0, day0.Add(24*time.Hour), "model")
	if err != nil {
		t.Fatal(err)
	}
	want := []usage.Row{{Group: "gpt-large", Requests: 1, PromptTokens: 1000, CompletionTokens: 200, CostNanoUSD: 90_000}, {Group: "gpt-small", Requests: 2, PromptTokens: 110, CompletionTokens: 25, CostNanoUSD: 1_800}}
	if !reflect.DeepEqual(u, want) {
		t.Errorf("usage by model = %+v; want %+v", u, want)
	}
	u, err = usage.Query(ctx, pool, "acc_a", t1, t1.Add(30*time.Minute), "key")
	if err != nil {
		t.Fatal(err)
	}
	if want := []usage.Row{{Group: "key_1", Requests: 2, PromptTokens: 110, CompletionTokens: 25, CostNanoUSD: 1_800}}; !reflect.DeepEqual(u, want) {
		t.Errorf("usage by key in half an hour = %+v; want %+v", u, want)
	}
	u, err = usage.Query(ctx, pool, "acc_b", day0, day0.Add(72*time.Hour), "day")
	if err != nil {
		t.Fatal(err)
	}
	if want := []usage.Row{{Group: "2026-03-03", Requests: 1, PromptTokens: 7, CompletionTokens: 3, CostNanoUSD: 50}}; !reflect.DeepEqual(u, want) {
		t.Errorf("usage by day = %+v; want %+v", u, want)
	}
	u, err = usage.Query(ctx, pool, "acc_b", day0, day0.Add(24*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []usage.Row{{}}; !reflect.DeepEqual(u, want) {
		t.Errorf("empty total = %+v; want one zero row", u)
	}
	u, err = usage.Query(ctx, pool, "acc_a", day0.Add(time.Hour), day0.Add(48*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []usage.Row{{Group: "", Requests: 3, PromptTokens: 1110, CompletionTokens: 225, CostNanoUSD: 91_800}}; !reflect.DeepEqual(u, want) {
		t.Errorf("total = %+v; want %+v", u, want)
	}
	if _, err := usage.Query(ctx, pool, "acc_a", day0, day0, "hour"); err == nil {
		t.Error("group by hour: no error")
	}

	// Jobs.
	js, err := jobs.List(ctx, pool, "acc_a", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 5 {
		t.Fatalf("jobs = %d; want 5", len(js))
	}
	if j := js[0]; j.CompletionID != "c5" || j.Status != jobs.JobQueued || j.StartedAt != nil || j.FinishedAt != nil || j.Mode != events.ModeAsync {
		t.Errorf("newest job = %+v; want c5 queued", j)
	}
	if j := js[1]; j.CompletionID != "c4" || j.Status != jobs.JobFailed || j.ErrorType != "upstream_error" ||
		j.ErrorMessage != "provider c4 down" || j.FinishedAt == nil || !j.FinishedAt.Equal(t1.Add(2*time.Hour+3*time.Second).Truncate(time.Microsecond)) {
		t.Errorf("failed job = %+v", j)
	}
	if j := js[4]; j.CompletionID != "c1" || j.Status != jobs.JobSucceeded || j.KeyID != "key_1" || j.Model != "gpt-small" ||
		!j.RequestedAt.Equal(t1.Truncate(time.Microsecond)) || !j.StartedAt.Equal(t1.Add(time.Second).Truncate(time.Microsecond)) {
		t.Errorf("first job = %+v", j)
	}

	if got := counterValue(t, projections.EventsCounter(s).WithLabelValues(events.TypeCompletionSucceeded, "applied")); got != 4 {
		t.Errorf("applied succeeded events = %v; want 4", got)
	}
	if got := s.LastPosition(); got != l.All[len(l.All)-1].Position {
		t.Errorf("last position = %d; want %d", got, l.All[len(l.All)-1].Position)
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
	if got := counterValue(t, projections.EventsCounter(s).WithLabelValues(events.TypeCompletionSucceeded, "skipped")); got != 5 {
		t.Errorf("skipped succeeded events = %v; want 5", got)
	}
}

func TestGapAppliesNothing(t *testing.T) {
	t.Parallel()
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
	s := newSet(t, pool, projections.LiveSchema)
	handleAll(t, s, c1[0])
	before := dump(t, pool, projections.LiveSchema)

	err := s.Handle(ctx, c1[2])
	var gap *projections.GapError
	if !errors.Is(err, projections.ErrGap) || !errors.As(err, &gap) || gap.Applied != 1 || gap.Got != 3 || gap.StreamID != "completion-c1" {
		t.Fatalf("handle v3 after v1 = %v; want a gap from 1 to 3", err)
	}
	// In a batch, a gap anywhere applies nothing, not even the events before it.
	if err := s.HandleBatch(ctx, append(other[:2:2], c1[2])); !errors.Is(err, projections.ErrGap) {
		t.Fatalf("batch with a gap = %v; want projections.ErrGap", err)
	}
	if after := dump(t, pool, projections.LiveSchema); !reflect.DeepEqual(before, after) {
		t.Errorf("a gap changed the read models:\nbefore %v\nafter  %v", before, after)
	}
	// Once the missing event comes, the rest applies.
	handleAll(t, s, c1[1], c1[2])
	stored := l.Stored()
	handleAll(t, s, stored[len(stored)-1])
	var v int64
	if err := pool.QueryRow(ctx, `SELECT version FROM projection_streams WHERE projection = $1 AND stream_id = 'account-acc_a'`, projections.SetName).Scan(&v); err != nil || v != 1 {
		t.Errorf("guard of the account stream = %d, %v; want 1", v, err)
	}
	js, err := jobs.List(ctx, pool, "acc_a", 0)
	if err != nil || len(js) != 1 || js[0].Status != jobs.JobSucceeded {
		t.Errorf("jobs = %+v, %v; want c1 succeeded", js, err)
	}
}
