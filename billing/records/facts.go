package records

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// NewFacts returns the projector of billing_record_facts in schema: for
// each billing record, the ids of its billing.record_closed,
// billing.record_flagged and billing.usage_reported, and what was
// reported to Stripe (quantity, customer, identifier).
func NewFacts(schema string) projections.Projector {
	t := projections.Table(schema, "billing_record_facts")
	closed := fmt.Sprintf(`INSERT INTO %s (record_id, closed_event_id) VALUES ($1, $2)
		ON CONFLICT (record_id) DO UPDATE SET closed_event_id = EXCLUDED.closed_event_id`, t)
	flagged := fmt.Sprintf(`INSERT INTO %s (record_id, flagged_event_id) VALUES ($1, $2)
		ON CONFLICT (record_id) DO UPDATE SET flagged_event_id = EXCLUDED.flagged_event_id`, t)
	reported := fmt.Sprintf(`INSERT INTO %s (record_id, reported_event_id, reported_quantity, stripe_customer_id, identifier)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (record_id) DO UPDATE SET reported_event_id = EXCLUDED.reported_event_id,
			reported_quantity = EXCLUDED.reported_quantity, stripe_customer_id = EXCLUDED.stripe_customer_id,
			identifier = EXCLUDED.identifier`, t)
	types := []string{events.TypeBillingRecordClosed, events.TypeBillingRecordFlagged, events.TypeBillingUsageReported}
	return &statements{name: "billing_record_facts", types: types, queue: func(b *pgx.Batch, e events.Envelope, d events.Data) {
		// A record's facts are those of its own stream.
		id, ok := strings.CutPrefix(e.StreamID, events.StreamBillingRecord)
		if !ok {
			return
		}
		switch d := d.(type) {
		case events.BillingRecordClosed:
			b.Queue(closed, id, e.EventID)
		case events.BillingRecordFlagged:
			b.Queue(flagged, id, e.EventID)
		case events.BillingUsageReported:
			b.Queue(reported, id, e.EventID, d.Quantity, d.StripeCustomerID, d.Identifier)
		}
	}}
}
