package records_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/projections/projectionstest"
)

const testWindow = time.Hour

// day0 is a Monday midnight UTC; the scenarios' events are stamped from
// it, with nanoseconds, as real clocks give them.
var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// build returns the billing read models' projectors on schema.
func build(schema string) []projections.Projector {
	return records.Projectors(schema, testWindow, billing.UnitTokens)
}

// evlog is the tests' event log on a real store.
type evlog = projectionstest.Log

func newLog(t testing.TB, pool *pgxpool.Pool) *evlog { return projectionstest.NewLog(t, pool) }

func closed(l *evlog, r billing.Record, quantity int64, at time.Time) events.Envelope {
	return l.Append(events.StreamBillingRecord+r.RecordID, r.AccountID, at, events.BillingRecordClosed{
		RecordID: r.RecordID, AccountID: r.AccountID, WindowStart: r.WindowStart, WindowEnd: r.WindowEnd,
		Quantity: quantity, Unit: r.Unit,
	})[0]
}

func reported(l *evlog, r billing.Record, quantity int64, at time.Time) events.Envelope {
	return l.Append(events.StreamBillingRecord+r.RecordID, r.AccountID, at, events.BillingUsageReported{
		RecordID: r.RecordID, AccountID: r.AccountID, StripeCustomerID: "cus_" + r.AccountID,
		EventName: "tokens", Identifier: r.RecordID, Quantity: quantity, ReportedAt: at,
	})[0]
}

// newSet returns a Set of ps on schema, of the billing read models when
// ps is empty.
func newSet(t testing.TB, pool *pgxpool.Pool, schema string, ps ...projections.Projector) *projections.Set {
	t.Helper()
	if len(ps) == 0 {
		ps = build(schema)
	}
	s, err := projections.NewSet(pool, schema, nil, nil, ps...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handleAll delivers events one at a time.
var handleAll = projectionstest.HandleAll

// dump returns every read-model table of schema as sorted text rows.
func dump(t testing.TB, pool *pgxpool.Pool, schema string) map[string][]string {
	t.Helper()
	out, err := projections.Dump(context.Background(), pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func recordsOf(t testing.TB, pool *pgxpool.Pool, account string) []billing.Record {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT record_id, account_id, window_start, window_end, seq, unit, quantity, status, reported_at
		FROM billing_records WHERE account_id = $1 ORDER BY window_start, seq`, account)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []billing.Record
	for rows.Next() {
		var b billing.Record
		if err := rows.Scan(&b.RecordID, &b.AccountID, &b.WindowStart, &b.WindowEnd, &b.Seq, &b.Unit, &b.Quantity, &b.Status, &b.ReportedAt); err != nil {
			t.Fatal(err)
		}
		b.WindowStart, b.WindowEnd = b.WindowStart.UTC(), b.WindowEnd.UTC()
		if b.ReportedAt != nil {
			u := b.ReportedAt.UTC()
			b.ReportedAt = &u
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
