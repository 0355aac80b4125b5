package records

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/projections"
)

// ledgerQuantity is the SQL for a ledger row's quantity in unit.
func ledgerQuantity(unit string) (string, error) {
	switch unit {
	case "tokens":
		return "(l.prompt_tokens + l.completion_tokens)", nil
	case "cost_nano_usd":
		return "l.cost_nano_usd", nil
	}
	return "", fmt.Errorf("billing unit %q: want tokens or cost_nano_usd", unit)
}

// Reconcile compares, per account, the usage ledger, the billing records
// and what was reported to Stripe for the period (usage by when it
// happened; records and reports by their window), read from the live
// read models: see billing.Reconcile.
func Reconcile(ctx context.Context, q projections.Querier, unit, period string) (billing.Reconciliation, error) {
	from, to, err := billing.ParsePeriod(period)
	if err != nil {
		return billing.Reconciliation{}, err
	}
	lq, err := ledgerQuantity(unit)
	if err != nil {
		return billing.Reconciliation{}, err
	}
	ledger, err := ledgerEntries(ctx, q, lq, from, to)
	if err != nil {
		return billing.Reconciliation{Period: period, From: from, To: to, Unit: unit, Agrees: true}, fmt.Errorf("reconcile ledger: %w", err)
	}
	recs, err := recordEntries(ctx, q, from, to)
	if err != nil {
		return billing.Reconciliation{Period: period, From: from, To: to, Unit: unit, Agrees: true}, fmt.Errorf("reconcile records: %w", err)
	}
	return billing.Reconcile(period, from, to, unit, ledger, recs), nil
}

// ledgerEntries reads the ledger's completions of [from, to) with their
// billing record items; lq is the SQL of a ledger row's quantity.
func ledgerEntries(ctx context.Context, q projections.Querier, lq string, from, to time.Time) ([]billing.LedgerEntry, error) {
	rows, err := q.Query(ctx, `SELECT l.account_id, l.completion_id, l.event_id::text, `+lq+`, i.record_id, i.quantity
		FROM usage_ledger l LEFT JOIN billing_record_items i USING (completion_id)
		WHERE l.occurred_at >= $1 AND l.occurred_at < $2 ORDER BY l.account_id, l.occurred_at`, from, to)
	if err != nil {
		return nil, err
	}
	var out []billing.LedgerEntry
	err = forRows(rows, func(row pgx.Rows) error {
		var l billing.LedgerEntry
		var record *string
		var itemQty *int64
		if err := row.Scan(&l.AccountID, &l.CompletionID, &l.EventID, &l.Quantity, &record, &itemQty); err != nil {
			return err
		}
		if record != nil {
			l.Billed, l.RecordID = true, *record
		}
		if itemQty != nil {
			l.ItemQuantity = *itemQty
		}
		out = append(out, l)
		return nil
	})
	return out, err
}

// recordEntries reads the billing records of windows starting in
// [from, to) with their facts and their completions' events.
func recordEntries(ctx context.Context, q projections.Querier, from, to time.Time) ([]billing.RecordEntry, error) {
	rows, err := q.Query(ctx, `SELECT b.account_id, b.record_id, b.quantity, b.status,
			coalesce(f.reported_event_id::text, ''), coalesce(f.reported_quantity, 0),
			coalesce(f.closed_event_id::text, ''), coalesce(f.flagged_event_id::text, ''),
			coalesce((SELECT array_agg(l.event_id::text ORDER BY l.occurred_at) FROM billing_record_items i
			          JOIN usage_ledger l USING (completion_id) WHERE i.record_id = b.record_id), '{}')
		FROM billing_records b LEFT JOIN billing_record_facts f USING (record_id)
		WHERE b.window_start >= $1 AND b.window_start < $2 ORDER BY b.account_id, b.window_start, b.seq`, from, to)
	if err != nil {
		return nil, err
	}
	var out []billing.RecordEntry
	err = forRows(rows, func(row pgx.Rows) error {
		var r billing.RecordEntry
		if err := row.Scan(&r.AccountID, &r.RecordID, &r.Quantity, &r.Status, &r.ReportedEventID, &r.ReportedQuantity,
			&r.ClosedEventID, &r.FlaggedEventID, &r.CompletionEventIDs); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

func forRows(rows pgx.Rows, f func(pgx.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ExplainedItem is one completion behind a billing record.
type ExplainedItem struct {
	CompletionID string    `json:"completion_id"`
	EventID      string    `json:"event_id"`
	Model        string    `json:"model"`
	OccurredAt   time.Time `json:"occurred_at"`
	Quantity     int64     `json:"quantity"`
}

// ExplainedRecord is one billing record: what was reported for it, and
// the completions it came from.
type ExplainedRecord struct {
	RecordID         string          `json:"record_id"`
	WindowStart      time.Time       `json:"window_start"`
	WindowEnd        time.Time       `json:"window_end"`
	Seq              int             `json:"seq"`
	Unit             string          `json:"unit"`
	Status           string          `json:"status"`
	Quantity         int64           `json:"quantity"`
	ClosedEventID    string          `json:"closed_event_id,omitempty"`
	ReportedEventID  string          `json:"reported_event_id,omitempty"`
	ReportedQuantity int64           `json:"reported_quantity"`
	StripeCustomerID string          `json:"stripe_customer_id,omitempty"`
	Identifier       string          `json:"meter_event_identifier,omitempty"`
	Items            []ExplainedItem `json:"items"`
	// ItemsQuantity is the items' sum. It exceeds Quantity when usage came
	// in while the record was being closed: the excess went to the next
	// record of the window (seq+1), which then has no items of its own.
	ItemsQuantity int64 `json:"items_quantity"`
}

// Explain returns, for an account and period, each billing record with
// what was reported to Stripe for it and the completion events it came
// from.
func Explain(ctx context.Context, q projections.Querier, accountID, period string) ([]ExplainedRecord, error) {
	from, to, err := billing.ParsePeriod(period)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT b.record_id, b.window_start, b.window_end, b.seq, b.unit, b.status, b.quantity,
			coalesce(f.closed_event_id::text, ''), coalesce(f.reported_event_id::text, ''), coalesce(f.reported_quantity, 0),
			coalesce(f.stripe_customer_id, ''), coalesce(f.identifier, '')
		FROM billing_records b LEFT JOIN billing_record_facts f USING (record_id)
		WHERE b.account_id = $1 AND b.window_start >= $2 AND b.window_start < $3 ORDER BY b.window_start, b.seq`,
		accountID, from, to)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	var out []ExplainedRecord
	err = forRows(rows, func(row pgx.Rows) error {
		var e ExplainedRecord
		if err := row.Scan(&e.RecordID, &e.WindowStart, &e.WindowEnd, &e.Seq, &e.Unit, &e.Status, &e.Quantity,
			&e.ClosedEventID, &e.ReportedEventID, &e.ReportedQuantity, &e.StripeCustomerID, &e.Identifier); err != nil {
			return err
		}
		e.WindowStart, e.WindowEnd, e.Items = e.WindowStart.UTC(), e.WindowEnd.UTC(), []ExplainedItem{}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	for i := range out {
		rows, err := q.Query(ctx, `SELECT i.completion_id, coalesce(l.event_id::text, ''), coalesce(l.model, ''), coalesce(l.occurred_at, 'epoch'), i.quantity
			FROM billing_record_items i LEFT JOIN usage_ledger l USING (completion_id)
			WHERE i.record_id = $1 ORDER BY l.occurred_at, i.completion_id`, out[i].RecordID)
		if err != nil {
			return nil, fmt.Errorf("explain %s: %w", out[i].RecordID, err)
		}
		err = forRows(rows, func(row pgx.Rows) error {
			var it ExplainedItem
			if err := row.Scan(&it.CompletionID, &it.EventID, &it.Model, &it.OccurredAt, &it.Quantity); err != nil {
				return err
			}
			it.OccurredAt = it.OccurredAt.UTC()
			out[i].Items = append(out[i].Items, it)
			out[i].ItemsQuantity += it.Quantity
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("explain %s: %w", out[i].RecordID, err)
		}
	}
	return out, nil
}
