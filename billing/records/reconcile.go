package records

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// Difference is one reason an account's totals disagree, with the event
// ids behind it.
type Difference struct {
	// Kind is completion_not_billed, item_without_completion,
	// item_quantity_mismatch, record_not_reported or
	// reported_quantity_mismatch.
	Kind         string   `json:"kind"`
	RecordID     string   `json:"record_id,omitempty"`
	CompletionID string   `json:"completion_id,omitempty"`
	Status       string   `json:"status,omitempty"`
	Quantity     int64    `json:"quantity"`
	EventIDs     []string `json:"event_ids"`
}

// AccountReconciliation compares one account's totals for a period.
type AccountReconciliation struct {
	AccountID string `json:"account_id"`
	// Ledger is the billable quantity of the usage ledger's completions.
	Ledger int64 `json:"ledger_total"`
	// Billable is the quantity of the account's billing records.
	Billable int64 `json:"billable_total"`
	// Reported is what Stripe accepted (billing.usage_reported).
	Reported    int64        `json:"reported_total"`
	Agrees      bool         `json:"agrees"`
	Differences []Difference `json:"differences"`
}

// Reconciliation is a period's reconciliation of every account.
type Reconciliation struct {
	Period   string                  `json:"period"`
	From     time.Time               `json:"from"`
	To       time.Time               `json:"to"`
	Unit     string                  `json:"unit"`
	Agrees   bool                    `json:"agrees"`
	Accounts []AccountReconciliation `json:"accounts"`
}

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
// happened; records and reports by their window). Read models are read
// from the live schema; reports from the event store itself.
func Reconcile(ctx context.Context, q projections.Querier, unit, period string) (Reconciliation, error) {
	from, to, err := billing.ParsePeriod(period)
	if err != nil {
		return Reconciliation{}, err
	}
	lq, err := ledgerQuantity(unit)
	if err != nil {
		return Reconciliation{}, err
	}
	r := Reconciliation{Period: period, From: from, To: to, Unit: unit, Agrees: true}
	accs := map[string]*AccountReconciliation{}
	acc := func(id string) *AccountReconciliation {
		if a, ok := accs[id]; ok {
			return a
		}
		a := &AccountReconciliation{AccountID: id, Agrees: true, Differences: []Difference{}}
		accs[id] = a
		return a
	}
	diff := func(id string, d Difference) {
		a := acc(id)
		a.Agrees, r.Agrees = false, false
		a.Differences = append(a.Differences, d)
	}
	// Ledger vs billing record items, completion by completion.
	rows, err := q.Query(ctx, `SELECT l.account_id, l.completion_id, l.event_id::text, `+lq+`, i.record_id, i.quantity
		FROM usage_ledger l LEFT JOIN billing_record_items i USING (completion_id)
		WHERE l.occurred_at >= $1 AND l.occurred_at < $2 ORDER BY l.account_id, l.occurred_at`, from, to)
	if err != nil {
		return r, fmt.Errorf("reconcile ledger: %w", err)
	}
	err = forRows(rows, func(row pgx.Rows) error {
		var account, completion, eventID string
		var qty int64
		var record *string
		var itemQty *int64
		if err := row.Scan(&account, &completion, &eventID, &qty, &record, &itemQty); err != nil {
			return err
		}
		acc(account).Ledger += qty
		switch {
		case record == nil && qty > 0:
			diff(account, Difference{Kind: "completion_not_billed", CompletionID: completion, Quantity: qty, EventIDs: []string{eventID}})
		case itemQty != nil && *itemQty != qty:
			diff(account, Difference{Kind: "item_quantity_mismatch", CompletionID: completion, RecordID: *record, Quantity: *itemQty - qty, EventIDs: []string{eventID}})
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("reconcile ledger: %w", err)
	}
	// Records, with what Stripe accepted for each (from the record's stream).
	// A flagged record (too old for Stripe) stays a record_not_reported
	// difference, with its billing.record_flagged event first.
	rows, err = q.Query(ctx, `SELECT b.account_id, b.record_id, b.quantity, b.status,
			rep.event_id::text, (rep.data->>'quantity')::bigint, cl.event_id::text, fl.event_id::text,
			coalesce((SELECT array_agg(l.event_id::text ORDER BY l.occurred_at) FROM billing_record_items i
			          JOIN usage_ledger l USING (completion_id) WHERE i.record_id = b.record_id), '{}')
		FROM billing_records b
		LEFT JOIN events rep ON rep.stream_id = 'billingrecord-' || b.record_id AND rep.type = $3
		LEFT JOIN events cl ON cl.stream_id = 'billingrecord-' || b.record_id AND cl.type = $4
		LEFT JOIN events fl ON fl.stream_id = 'billingrecord-' || b.record_id AND fl.type = $5
		WHERE b.window_start >= $1 AND b.window_start < $2 ORDER BY b.account_id, b.window_start, b.seq`,
		from, to, events.TypeBillingUsageReported, events.TypeBillingRecordClosed, events.TypeBillingRecordFlagged)
	if err != nil {
		return r, fmt.Errorf("reconcile records: %w", err)
	}
	err = forRows(rows, func(row pgx.Rows) error {
		var account, record, status string
		var qty int64
		var repID, closedID, flaggedID *string
		var repQty *int64
		var completionEvents []string
		if err := row.Scan(&account, &record, &qty, &status, &repID, &repQty, &closedID, &flaggedID, &completionEvents); err != nil {
			return err
		}
		a := acc(account)
		a.Billable += qty
		ids := completionEvents
		if closedID != nil {
			ids = append([]string{*closedID}, ids...)
		}
		if flaggedID != nil {
			ids = append([]string{*flaggedID}, ids...)
		}
		switch {
		case repID == nil && qty > 0:
			diff(account, Difference{Kind: "record_not_reported", RecordID: record, Status: status, Quantity: qty, EventIDs: ids})
		case repID != nil:
			a.Reported += *repQty
			if *repQty != qty {
				diff(account, Difference{Kind: "reported_quantity_mismatch", RecordID: record, Status: status, Quantity: *repQty - qty,
					EventIDs: append([]string{*repID}, ids...)})
			}
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("reconcile records: %w", err)
	}
	for _, a := range accs {
		if a.Agrees && (a.Ledger != a.Billable || a.Billable != a.Reported) {
			// Totals disagree with no itemised cause: flag it all the same.
			a.Agrees, r.Agrees = false, false
		}
		r.Accounts = append(r.Accounts, *a)
	}
	sort.Slice(r.Accounts, func(i, j int) bool { return r.Accounts[i].AccountID < r.Accounts[j].AccountID })
	return r, nil
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
			coalesce(cl.event_id::text, ''), coalesce(rep.event_id::text, ''), coalesce((rep.data->>'quantity')::bigint, 0),
			coalesce(rep.data->>'stripe_customer_id', ''), coalesce(rep.data->>'identifier', '')
		FROM billing_records b
		LEFT JOIN events rep ON rep.stream_id = 'billingrecord-' || b.record_id AND rep.type = $4
		LEFT JOIN events cl ON cl.stream_id = 'billingrecord-' || b.record_id AND cl.type = $5
		WHERE b.account_id = $1 AND b.window_start >= $2 AND b.window_start < $3 ORDER BY b.window_start, b.seq`,
		accountID, from, to, events.TypeBillingUsageReported, events.TypeBillingRecordClosed)
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
