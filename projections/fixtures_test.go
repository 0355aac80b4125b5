package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

const testWindow = time.Hour

func buildAll(schema string) []Projector {
	return []Projector{NewUsageLedger(schema), NewJobs(schema), NewBillingRecords(schema, testWindow, UnitTokens)}
}

// evlog appends events to a real store, so they have real versions and
// positions, and remembers them in the global order.
type evlog struct {
	t     testing.TB
	ctx   context.Context
	store *pgstore.Store
	all   []events.Envelope
}

func newLog(t testing.TB, pool *pgxpool.Pool) *evlog {
	t.Helper()
	st, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &evlog{t: t, ctx: context.Background(), store: st}
}

func (l *evlog) append(stream, account string, at time.Time, ds ...events.Data) []events.Envelope {
	l.t.Helper()
	evs := make([]events.Envelope, len(ds))
	for i, d := range ds {
		e, err := events.New(stream, d, events.Metadata{AccountID: account, Actor: "test"}, at, "")
		if err != nil {
			l.t.Fatal(err)
		}
		evs[i] = e
	}
	out, err := l.store.Append(l.ctx, stream, pgstore.AnyVersion, evs...)
	if err != nil {
		l.t.Fatal(err)
	}
	l.all = append(l.all, out...)
	return out
}

func (l *evlog) requested(id, account, key, model string, at time.Time) events.Envelope {
	return l.append(events.StreamCompletion+id, account, at, events.CompletionRequested{
		CompletionID: id, AccountID: account, KeyID: key, Model: model, Mode: events.ModeAsync,
		Request: json.RawMessage(`{"messages":[]}`),
	})[0]
}

func (l *evlog) started(id, account string, at time.Time) events.Envelope {
	return l.append(events.StreamCompletion+id, account, at, events.CompletionStarted{
		CompletionID: id, Executor: "worker:test", LeaseExpiresAt: at.Add(time.Minute),
	})[0]
}

func (l *evlog) succeeded(id, account, key, model string, prompt, completion, cost int64, at time.Time) events.Envelope {
	return l.append(events.StreamCompletion+id, account, at, events.CompletionSucceeded{
		CompletionID: id, AccountID: account, KeyID: key, Model: model, Provider: "echo", UpstreamModel: model + "-up",
		Usage:       events.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
		CostNanoUSD: cost, LatencyMS: 12, Response: json.RawMessage(`{"id":"x"}`),
	})[0]
}

func (l *evlog) failed(id, account, key, model string, at time.Time) events.Envelope {
	return l.append(events.StreamCompletion+id, account, at, events.CompletionFailed{
		CompletionID: id, AccountID: account, KeyID: key, Model: model, Status: 502,
		ErrorType: "upstream_error", ErrorMessage: "provider " + id + " down",
	})[0]
}

// complete records a whole successful completion.
func (l *evlog) complete(id, account, key, model string, prompt, completion, cost int64, at time.Time) []events.Envelope {
	return []events.Envelope{
		l.requested(id, account, key, model, at),
		l.started(id, account, at.Add(time.Second)),
		l.succeeded(id, account, key, model, prompt, completion, cost, at.Add(2*time.Second)),
	}
}

func (l *evlog) closed(r BillingRecord, quantity int64, at time.Time) events.Envelope {
	return l.append(events.StreamBillingRecord+r.RecordID, r.AccountID, at, events.BillingRecordClosed{
		RecordID: r.RecordID, AccountID: r.AccountID, WindowStart: r.WindowStart, WindowEnd: r.WindowEnd,
		Quantity: quantity, Unit: r.Unit,
	})[0]
}

func (l *evlog) reported(r BillingRecord, quantity int64, at time.Time) events.Envelope {
	return l.append(events.StreamBillingRecord+r.RecordID, r.AccountID, at, events.BillingUsageReported{
		RecordID: r.RecordID, AccountID: r.AccountID, StripeCustomerID: "cus_" + r.AccountID,
		EventName: "tokens", Identifier: r.RecordID, Quantity: quantity, ReportedAt: at,
	})[0]
}

// stored reads the whole log back in the global order, as the relay
// publishes it. The store shows only events older than every running
// transaction of the (shared) server, so it waits until all are readable.
func (l *evlog) stored() []events.Envelope {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out []events.Envelope
		var cur pgstore.Cursor
		for {
			evs, next, err := l.store.ReadAll(l.ctx, cur, 500, pgstore.Filter{})
			if err != nil {
				l.t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			out, cur = append(out, evs...), next
		}
		if len(out) >= len(l.all) {
			return out
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("only %d of %d events readable after 30s", len(out), len(l.all))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newSet(t testing.TB, pool *pgxpool.Pool, schema string) *Set {
	t.Helper()
	s, err := NewSet(pool, schema, nil, nil, buildAll(schema)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func handleAll(t testing.TB, s *Set, evs ...events.Envelope) {
	t.Helper()
	for _, e := range evs {
		if err := s.Handle(context.Background(), e); err != nil {
			t.Fatalf("handle %s %s v%d: %v", e.Type, e.StreamID, e.StreamVersion, err)
		}
	}
}

// dump returns every read-model table of schema as sorted text rows.
func dump(t testing.TB, pool *pgxpool.Pool, schema string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, tb := range readModelTables() {
		rows, err := pool.Query(context.Background(), fmt.Sprintf(`SELECT x::text FROM %s x`, table(schema, tb)))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out[tb] = append(out[tb], s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(out[tb])
	}
	return out
}

func recordsOf(t testing.TB, pool *pgxpool.Pool, account string) []BillingRecord {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT record_id, account_id, window_start, window_end, seq, unit, quantity, status, reported_at
		FROM billing_records WHERE account_id = $1 ORDER BY window_start, seq`, account)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []BillingRecord
	for rows.Next() {
		var b BillingRecord
		if err := rows.Scan(&b.RecordID, &b.AccountID, &b.WindowStart, &b.WindowEnd, &b.Seq, &b.Unit, &b.Quantity, &b.Status, &b.ReportedAt); err != nil {
			t.Fatal(err)
		}
		b.WindowStart, b.WindowEnd, b.ReportedAt = b.WindowStart.UTC(), b.WindowEnd.UTC(), utcPtr(b.ReportedAt)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
