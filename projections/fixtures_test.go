package projections

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections/projectionstest"
)

const testWindow = time.Hour

func buildAll(schema string) []Projector {
	return []Projector{NewUsageLedger(schema), NewJobs(schema), NewBillingRecords(schema, testWindow, UnitTokens)}
}

// evlog is the tests' event log on a real store.
type evlog = projectionstest.Log

func newLog(t testing.TB, pool *pgxpool.Pool) *evlog { return projectionstest.NewLog(t, pool) }

func closed(l *evlog, r BillingRecord, quantity int64, at time.Time) events.Envelope {
	return l.Append(events.StreamBillingRecord+r.RecordID, r.AccountID, at, events.BillingRecordClosed{
		RecordID: r.RecordID, AccountID: r.AccountID, WindowStart: r.WindowStart, WindowEnd: r.WindowEnd,
		Quantity: quantity, Unit: r.Unit,
	})[0]
}

func reported(l *evlog, r BillingRecord, quantity int64, at time.Time) events.Envelope {
	return l.Append(events.StreamBillingRecord+r.RecordID, r.AccountID, at, events.BillingUsageReported{
		RecordID: r.RecordID, AccountID: r.AccountID, StripeCustomerID: "cus_" + r.AccountID,
		EventName: "tokens", Identifier: r.RecordID, Quantity: quantity, ReportedAt: at,
	})[0]
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
	projectionstest.HandleAll(t, s, evs...)
}

// dump returns every read-model table of schema as sorted text rows.
func dump(t testing.TB, pool *pgxpool.Pool, schema string) map[string][]string {
	t.Helper()
	out, err := Dump(context.Background(), pool, schema)
	if err != nil {
		t.Fatal(err)
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
