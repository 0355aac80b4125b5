package events

import (
	"time"
)

// Events of the billingrecord-… stream: a billable window's quantities closed, reported to Stripe, or flagged.

// Event type names of this stream. They are past-tense facts and never change once used.
const (
	TypeBillingRecordClosed  = "billing.record_closed"
	TypeBillingUsageReported = "billing.usage_reported"
	TypeBillingRecordFlagged = "billing.record_flagged"
)

// billingrecordTypes registers this stream's event types and their schema versions.
var billingrecordTypes = map[string]typeInfo{
	TypeBillingRecordClosed:  {version: 1, decode: decoder[BillingRecordClosed]()},
	TypeBillingUsageReported: {version: 1, decode: decoder[BillingUsageReported]()},
	TypeBillingRecordFlagged: {version: 1, decode: decoder[BillingRecordFlagged]()},
}

// BillingRecordClosed: the billing reporter froze a record's quantity before
// sending it to Stripe. A retry after a crash re-sends exactly this quantity
// under the same identifier; usage that arrives later goes to a new record.
type BillingRecordClosed struct {
	RecordID    string    `json:"record_id"`
	AccountID   string    `json:"account_id"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Quantity    int64     `json:"quantity"`
	Unit        string    `json:"unit"`
	// StripeCustomerID is the customer the record is sent to, frozen with
	// the quantity so a re-send after a crash goes to the same customer
	// even if the account's link changed meanwhile. Empty in events stored
	// before it existed (the account's customer is used then).
	StripeCustomerID string `json:"stripe_customer_id,omitempty"`
}

// EventType implements Data.
func (BillingRecordClosed) EventType() string { return TypeBillingRecordClosed }

// BillingUsageReported: Stripe accepted the record's meter event.
type BillingUsageReported struct {
	RecordID         string    `json:"record_id"`
	AccountID        string    `json:"account_id"`
	StripeCustomerID string    `json:"stripe_customer_id"`
	EventName        string    `json:"event_name"`
	Identifier       string    `json:"identifier"`
	Quantity         int64     `json:"quantity"`
	ReportedAt       time.Time `json:"reported_at"`
}

// EventType implements Data.
func (BillingUsageReported) EventType() string { return TypeBillingUsageReported }

// Reasons a billing record is flagged.
const (
	// FlagTooOld: the record's window starts longer ago than Stripe accepts
	// meter events for (35 days).
	FlagTooOld = "too_old"
)

// BillingRecordFlagged: a billing record cannot be sent to Stripe (its
// window is older than Stripe accepts meter events for) and needs an
// operator. It freezes the record like billing.record_closed does and takes
// it out of the reporter's queue, so it blocks no other record; the
// reconciliation keeps showing its quantity as not reported.
type BillingRecordFlagged struct {
	RecordID    string    `json:"record_id"`
	AccountID   string    `json:"account_id"`
	WindowStart time.Time `json:"window_start"`
	Quantity    int64     `json:"quantity"`
	// Reason is one of the Flag* constants.
	Reason string `json:"reason"`
}

// EventType implements Data.
func (BillingRecordFlagged) EventType() string { return TypeBillingRecordFlagged }
