// Package billing holds Tollgate's billing decisions, pure: what a Stripe
// event does to an account, when an account is downgraded, how a billing
// record is closed, flagged and reported, and how the totals of a period
// compare. It imports no driver; billing/records keeps the read models and
// billing/stripe talks to Stripe.
package billing

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Billing units: what a billing record's quantity counts.
const (
	UnitTokens      = "tokens"
	UnitCostNanoUSD = "cost_nano_usd"
)

// Billing record statuses (the billing_records read model).
const (
	// StatusOpen: usage is still being added.
	StatusOpen = "open"
	// StatusClosed: the reporter froze the quantity and is sending it.
	StatusClosed = "closed"
	// StatusReported: Stripe accepted it.
	StatusReported = "reported"
	// StatusFlagged: too old for Stripe; frozen and left to an operator,
	// never due again.
	StatusFlagged = "flagged"
)

// Record is an account's billable quantity for one window, as the
// billing_records read model shows it. The read model may lag behind the
// record's stream; the reporter only uses it to find records and, for a
// record not closed yet, its quantity.
type Record struct {
	RecordID    string
	AccountID   string
	WindowStart time.Time
	WindowEnd   time.Time
	Seq         int
	Unit        string
	Quantity    int64
	// Status is StatusOpen, StatusClosed, StatusReported or StatusFlagged.
	Status     string
	ReportedAt *time.Time
}

// RecordID returns the id of an account's seq-th record of the window
// starting at windowStart. It is derived, not drawn, so that the live
// model and a rebuild name every record alike, and so that the Stripe
// meter event identifier (the record id) is the same on every retry.
func RecordID(accountID string, windowStart time.Time, seq int) string {
	sum := sha256.Sum256([]byte(accountID + "|" + windowStart.UTC().Format(time.RFC3339) + "|" + strconv.Itoa(seq)))
	return "br_" + hex.EncodeToString(sum[:])[:24]
}
