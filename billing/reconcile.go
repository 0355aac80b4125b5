package billing

import (
	"sort"
	"time"
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

// LedgerEntry is one completion of the usage ledger in a period, with the
// billing record item it went into, if any.
type LedgerEntry struct {
	AccountID    string
	CompletionID string
	// EventID is the completion's completion.succeeded.
	EventID string
	// Quantity is the completion's billable quantity in the period's unit.
	Quantity int64
	// Billed: the completion has a billing record item.
	Billed       bool
	RecordID     string
	ItemQuantity int64
}

// RecordEntry is one billing record of a period, with what its stream says.
type RecordEntry struct {
	AccountID string
	RecordID  string
	Status    string
	Quantity  int64
	// ReportedEventID is its billing.usage_reported, "" when not reported.
	ReportedEventID  string
	ReportedQuantity int64
	// ClosedEventID and FlaggedEventID are its billing.record_closed and
	// billing.record_flagged, "" when none.
	ClosedEventID  string
	FlaggedEventID string
	// CompletionEventIDs are its completions' events, oldest first.
	CompletionEventIDs []string
}

// Reconcile compares, per account, the usage ledger's completions, the
// billing records and what was reported to Stripe for a period: each
// completion is billed with its quantity, each record is reported with its
// quantity, and the three totals agree. A difference names the event ids
// behind it.
func Reconcile(period string, from, to time.Time, unit string, ledger []LedgerEntry, recs []RecordEntry) Reconciliation {
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
	for _, l := range ledger {
		acc(l.AccountID).Ledger += l.Quantity
		switch {
		case !l.Billed && l.Quantity > 0:
			diff(l.AccountID, Difference{Kind: "completion_not_billed", CompletionID: l.CompletionID, Quantity: l.Quantity, EventIDs: []string{l.EventID}})
		case l.Billed && l.ItemQuantity != l.Quantity:
			diff(l.AccountID, Difference{Kind: "item_quantity_mismatch", CompletionID: l.CompletionID, RecordID: l.RecordID,
				Quantity: l.ItemQuantity - l.Quantity, EventIDs: []string{l.EventID}})
		}
	}
	// A flagged record (too old for Stripe) stays a record_not_reported
	// difference, with its billing.record_flagged event first.
	for _, rec := range recs {
		a := acc(rec.AccountID)
		a.Billable += rec.Quantity
		ids := rec.CompletionEventIDs
		if rec.ClosedEventID != "" {
			ids = append([]string{rec.ClosedEventID}, ids...)
		}
		if rec.FlaggedEventID != "" {
			ids = append([]string{rec.FlaggedEventID}, ids...)
		}
		switch {
		case rec.ReportedEventID == "" && rec.Quantity > 0:
			diff(rec.AccountID, Difference{Kind: "record_not_reported", RecordID: rec.RecordID, Status: rec.Status, Quantity: rec.Quantity, EventIDs: ids})
		case rec.ReportedEventID != "":
			a.Reported += rec.ReportedQuantity
			if rec.ReportedQuantity != rec.Quantity {
				diff(rec.AccountID, Difference{Kind: "reported_quantity_mismatch", RecordID: rec.RecordID, Status: rec.Status,
					Quantity: rec.ReportedQuantity - rec.Quantity, EventIDs: append([]string{rec.ReportedEventID}, ids...)})
			}
		}
	}
	for _, a := range accs {
		if a.Agrees && (a.Ledger != a.Billable || a.Billable != a.Reported) {
			// Totals disagree with no itemised cause: flag it all the same.
			a.Agrees, r.Agrees = false, false
		}
		r.Accounts = append(r.Accounts, *a)
	}
	sort.Slice(r.Accounts, func(i, j int) bool { return r.Accounts[i].AccountID < r.Accounts[j].AccountID })
	return r
}
