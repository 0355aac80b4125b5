// Package records keeps the billing read models and answers the queries
// over them: billing records (each account's billable quantity per
// window, and the completions in it), and the queries of the reporter,
// reconciliation and explanations. Its projectors run in a
// projections.Set like every read model.
package records

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// recordIDSQL is billing.RecordID in SQL, over the columns or expressions
// account, windowStartText (RFC 3339) and seq.
func recordIDSQL(account, windowStartText, seq string) string {
	return fmt.Sprintf(`'br_' || left(encode(sha256(convert_to(%s || '|' || %s || '|' || %s::text, 'UTF8')), 'hex'), 24)`,
		account, windowStartText, seq)
}

// rfc3339SQL formats a timestamptz column the way Go's time.RFC3339 formats
// a whole-second UTC time.
func rfc3339SQL(col string) string {
	return fmt.Sprintf(`to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')`, col)
}

// billingRecords keeps billing_records and billing_record_items.
type billingRecords struct {
	window               time.Duration
	unit                 string
	usage, close, report string
}

// NewRecords returns the projector of billing_records and
// billing_record_items in schema: each successful completion's quantity in
// unit (billing.UnitTokens or billing.UnitCostNanoUSD) is added to its account's open
// record of the window (of length window, aligned on the Unix epoch in UTC,
// a whole number of seconds) its event occurred in.
func NewRecords(schema string, window time.Duration, unit string) projections.Projector {
	br, items := projections.Table(schema, "billing_records"), projections.Table(schema, "billing_record_items")
	return &billingRecords{
		window: window,
		unit:   unit,
		// Add each window's completions to its newest record when it is
		// open, else open the next one; and only the completions whose
		// item is new, so a completion is billed once whatever the
		// delivery. One statement for a whole transaction's completions:
		// many of them fall in the same few records.
		usage: fmt.Sprintf(`
			WITH input AS (
				SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[])
					AS u(account_id, window_start, window_text, completion_id, quantity)
			), last AS (
				SELECT g.account_id, g.window_start, g.window_text, l.record_id, l.seq, l.status
				FROM (SELECT DISTINCT account_id, window_start, window_text FROM input) g
				LEFT JOIN LATERAL (
					SELECT record_id, seq, status FROM %[1]s r
					WHERE r.account_id = g.account_id AND r.window_start = g.window_start
					ORDER BY seq DESC LIMIT 1 FOR UPDATE
				) l ON true
			), target AS (
				SELECT account_id, window_start, record_id, seq, false AS fresh FROM last WHERE status = '`+billing.StatusOpen+`'
				UNION ALL
				SELECT account_id, window_start, %[3]s, n.seq, true
				FROM (SELECT account_id, window_start, window_text, coalesce(seq, -1) + 1 AS seq FROM last
					WHERE status IS DISTINCT FROM '`+billing.StatusOpen+`') n
			), item AS (
				INSERT INTO %[2]s (completion_id, record_id, quantity)
				SELECT i.completion_id, t.record_id, i.quantity FROM input i JOIN target t USING (account_id, window_start)
				ON CONFLICT (completion_id) DO NOTHING
				RETURNING record_id, quantity
			), added AS (
				SELECT t.record_id, t.account_id, t.window_start, t.seq, t.fresh, s.quantity
				FROM target t JOIN (SELECT record_id, sum(quantity)::bigint AS quantity FROM item GROUP BY record_id) s USING (record_id)
			), fresh AS (
				INSERT INTO %[1]s (record_id, account_id, window_start, window_end, seq, unit, quantity, status)
				SELECT record_id, account_id, window_start, window_start + $6::interval, seq, $7::text, quantity, '`+billing.StatusOpen+`'
				FROM added WHERE fresh
			)
			UPDATE %[1]s AS b SET quantity = b.quantity + a.quantity
			FROM added a WHERE NOT a.fresh AND b.record_id = a.record_id`,
			br, items, recordIDSQL("n.account_id", "n.window_text", "n.seq")),
		// Freeze the record at the reported quantity: usage added after the
		// reporter read it moves to a new open record of the same window,
		// so what was sent to Stripe never changes and nothing is lost. A
		// record that is no longer open is left alone (a repeated close),
		// except that a closed record can still be flagged ($3, the new
		// status, is closed or flagged).
		close: fmt.Sprintf(`
			WITH r AS (
				SELECT record_id, account_id, window_start, window_end, unit, quantity, status
				FROM %[1]s WHERE record_id = $1::text FOR UPDATE
			), closing AS (
				UPDATE %[1]s AS b SET status = $3::text, quantity = $2::bigint
				FROM r WHERE b.record_id = r.record_id AND (r.status = '`+billing.StatusOpen+`'
					OR (r.status = '`+billing.StatusClosed+`' AND $3::text = '`+billing.StatusFlagged+`'))
				RETURNING r.account_id, r.window_start, r.window_end, r.unit, r.quantity - $2::bigint AS excess
			), nxt AS (
				SELECT c.*, (SELECT max(seq) + 1 FROM %[1]s WHERE account_id = c.account_id AND window_start = c.window_start) AS seq
				FROM closing c WHERE c.excess > 0
			), split AS (
				INSERT INTO %[1]s (record_id, account_id, window_start, window_end, seq, unit, quantity, status)
				SELECT %[2]s, account_id, window_start, window_end, seq, unit, excess, '`+billing.StatusOpen+`' FROM nxt
			)
			SELECT count(*) FROM r`,
			br, recordIDSQL("account_id", rfc3339SQL("window_start"), "seq")),
		// The first report's time stays: a repeated report changes nothing.
		report: fmt.Sprintf(`UPDATE %s SET status = '`+billing.StatusReported+`', reported_at = coalesce(reported_at, $2)
			WHERE record_id = $1`, br),
	}
}

// Name implements projections.Projector.
func (p *billingRecords) Name() string { return "billing_records" }

// Apply implements projections.Projector.
func (p *billingRecords) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return projections.ApplyPending(ctx, tx, p, p.Name(), e)
}

// Handles implements projections.Selective: the types billingChanges.Add
// reads.
func (p *billingRecords) Handles(t string) bool {
	switch t {
	case events.TypeCompletionSucceeded, events.TypeBillingRecordClosed, events.TypeBillingRecordFlagged, events.TypeBillingUsageReported:
		return true
	}
	return false
}

// Pending implements projections.Accumulator.
func (p *billingRecords) Pending() projections.Pending {
	return &billingChanges{p: p, seen: map[string]bool{}}
}

// billingChanges are one transaction's billing writes, in event order:
// runs of completions' usage, each written with one statement, between the
// other events' statements. A close, flag or report ends a run, so that it
// sees every completion before it and none after.
type billingChanges struct {
	p    *billingRecords
	ops  []func(b *pgx.Batch)
	run  *usageRun
	seen map[string]bool // completions of this transaction
}

// usageRun is a run of completions' billable quantities, column by column.
type usageRun struct {
	account, windowText, completion []string
	windowStart                     []time.Time
	quantity                        []int64
}

func (c *billingChanges) Add(e events.Envelope, d events.Data) error {
	p := c.p
	switch d := d.(type) {
	case events.CompletionSucceeded:
		var q int64
		switch p.unit {
		case billing.UnitTokens:
			q = d.Usage.PromptTokens + d.Usage.CompletionTokens
		case billing.UnitCostNanoUSD:
			q = d.CostNanoUSD
		default:
			return fmt.Errorf("billing unit %q: want %q or %q", p.unit, billing.UnitTokens, billing.UnitCostNanoUSD)
		}
		if p.window < time.Second || p.window%time.Second != 0 {
			// Record ids name the window by its start in whole seconds.
			return fmt.Errorf("billing window %s: want a whole number of seconds", p.window)
		}
		// A completion seen earlier in the transaction has its item
		// already: billing it again would add nothing.
		if q <= 0 || c.seen[d.CompletionID] {
			return nil
		}
		c.seen[d.CompletionID] = true
		if c.run == nil {
			r := &usageRun{}
			c.run = r
			c.ops = append(c.ops, func(b *pgx.Batch) {
				b.Queue(p.usage, r.account, r.windowStart, r.windowText, r.completion, r.quantity, p.window, p.unit)
			})
		}
		start := e.OccurredAt.UTC().Truncate(p.window)
		r := c.run
		r.account, r.windowStart, r.windowText = append(r.account, d.AccountID), append(r.windowStart, start), append(r.windowText, start.Format(time.RFC3339))
		r.completion, r.quantity = append(r.completion, d.CompletionID), append(r.quantity, q)
	case events.BillingRecordClosed:
		c.run = nil
		c.ops = append(c.ops, func(b *pgx.Batch) { p.queueClose(b, d.RecordID, d.Quantity, billing.StatusClosed) })
	case events.BillingRecordFlagged:
		c.run = nil
		c.ops = append(c.ops, func(b *pgx.Batch) { p.queueClose(b, d.RecordID, d.Quantity, billing.StatusFlagged) })
	case events.BillingUsageReported:
		c.run = nil
		at := e.OccurredAt.UTC()
		c.ops = append(c.ops, func(b *pgx.Batch) {
			b.Queue(p.report, d.RecordID, at).Exec(func(ct pgconn.CommandTag) error {
				if ct.RowsAffected() == 0 {
					return fmt.Errorf("report billing record %s: no such record", d.RecordID)
				}
				return nil
			})
		})
	}
	return nil
}

func (c *billingChanges) Flush(b *pgx.Batch) {
	for _, op := range c.ops {
		op(b)
	}
}

// queueClose freezes a record at quantity with status (closed or flagged).
func (p *billingRecords) queueClose(b *pgx.Batch, recordID string, quantity int64, status string) {
	b.Queue(p.close, recordID, quantity, status).QueryRow(func(row pgx.Row) error {
		var n int
		if err := row.Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			// The record is made before it can be closed; failing makes
			// the event come again rather than be lost.
			return fmt.Errorf("%s billing record %s: no such record", status, recordID)
		}
		return nil
	})
}

// Due returns the records of schema the reporter should send,
// oldest window first, at most limit: open records whose window ended at
// least delay before now (late usage has had time to arrive), and every
// closed record (closed but not yet reported: a reporter crashed between
// closing and reporting, so it must be sent again with the same quantity).
// Reported and flagged records are never due.
func Due(ctx context.Context, q projections.Querier, schema string, now time.Time, delay time.Duration, limit int) ([]billing.Record, error) {
	// Only accounts with a Stripe customer: the others' records cannot be
	// reported yet and must not take the batch from those that can.
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT r.record_id, r.account_id, r.window_start, r.window_end, r.seq, r.unit, r.quantity, r.status, r.reported_at
		FROM %s r JOIN %s c ON c.account_id = r.account_id
		WHERE (r.status = '`+billing.StatusOpen+`' AND r.window_end <= $1) OR r.status = '`+billing.StatusClosed+`'
		ORDER BY r.window_start, r.account_id, r.seq LIMIT $2`, projections.Table(schema, "billing_records"), projections.Table(schema, "billing_customers")),
		now.Add(-delay), limit)
	if err != nil {
		return nil, fmt.Errorf("due billing records: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (billing.Record, error) {
		var b billing.Record
		err := r.Scan(&b.RecordID, &b.AccountID, &b.WindowStart, &b.WindowEnd, &b.Seq, &b.Unit, &b.Quantity, &b.Status, &b.ReportedAt)
		b.WindowStart, b.WindowEnd, b.ReportedAt = b.WindowStart.UTC(), b.WindowEnd.UTC(), projections.UTC(b.ReportedAt)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("due billing records: %w", err)
	}
	return out, nil
}
