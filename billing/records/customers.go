package records

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/projections"
)

// NewCustomerLinks returns the projector of the customer links of schema,
// from billing.customer_linked: billing_customers (each account's Stripe
// customer, which the reporter's due records join) and
// billing_customer_links (each customer's account, the first linked in the
// global order, which the webhooks look events up by). The live links are
// also kept inline (CustomerLinksInline), so a rebuild and the live model
// agree and applying a link twice changes nothing.
func NewCustomerLinks(schema string) projections.Projector {
	byAccount, byCustomer := linkStatements(schema)
	return &statements{name: "billing_customer_links", types: []string{events.TypeBillingCustomerLinked}, queue: func(b *pgx.Batch, e events.Envelope, d events.Data) {
		if d, ok := d.(events.BillingCustomerLinked); ok {
			b.Queue(byAccount, d.AccountID, d.StripeCustomerID)
			b.Queue(byCustomer, d.StripeCustomerID, d.AccountID, e.Position)
		}
	}}
}

// linkStatements are the statements of a link in schema: by account, then
// by customer (the earliest position wins).
func linkStatements(schema string) (byAccount, byCustomer string) {
	byAccount = fmt.Sprintf(`INSERT INTO %s (account_id, stripe_customer_id) VALUES ($1, $2)
		ON CONFLICT (account_id) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id`, projections.Table(schema, "billing_customers"))
	byCustomer = fmt.Sprintf(`INSERT INTO %s AS l (stripe_customer_id, account_id, position) VALUES ($1, $2, $3)
		ON CONFLICT (stripe_customer_id) DO UPDATE SET account_id = EXCLUDED.account_id, position = EXCLUDED.position
		WHERE EXCLUDED.position < l.position`, projections.Table(schema, "billing_customer_links"))
	return byAccount, byCustomer
}

// CustomerLinksInline keeps the live customer links in the transaction
// that appends billing.customer_linked (pass it to pgstore.New), so a
// webhook finds a customer the moment its link is stored, as when the
// lookup read the events themselves.
type CustomerLinksInline struct{}

var _ pgstore.InlineProjection = CustomerLinksInline{}

// Handles reports whether the projection reads events of type t.
func (CustomerLinksInline) Handles(t string) bool { return t == events.TypeBillingCustomerLinked }

// Apply writes the links among evs.
func (CustomerLinksInline) Apply(ctx context.Context, tx pgx.Tx, evs []events.Envelope) error {
	byAccount, byCustomer := linkStatements(projections.LiveSchema)
	for _, e := range evs {
		if e.Type != events.TypeBillingCustomerLinked {
			continue
		}
		d, err := events.Decode(e)
		if err != nil {
			return fmt.Errorf("customer links: %w", err)
		}
		l := d.(events.BillingCustomerLinked)
		if _, err := tx.Exec(ctx, byAccount, l.AccountID, l.StripeCustomerID); err != nil {
			return fmt.Errorf("customer links: %s: %w", l.StripeCustomerID, err)
		}
		if _, err := tx.Exec(ctx, byCustomer, l.StripeCustomerID, l.AccountID, e.Position); err != nil {
			return fmt.Errorf("customer links: %s: %w", l.StripeCustomerID, err)
		}
	}
	return nil
}

// CustomerLinks answers which account a Stripe customer is linked to from
// the live billing_customer_links.
type CustomerLinks struct {
	// Q reads the live read model.
	Q projections.Querier
}

// AccountForCustomer returns the account a Stripe customer is linked to,
// "" when none is.
func (c CustomerLinks) AccountForCustomer(ctx context.Context, customerID string) (string, error) {
	var id string
	err := c.Q.QueryRow(ctx, `SELECT account_id FROM billing_customer_links WHERE stripe_customer_id = $1`, customerID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("account for customer %s: %w", customerID, err)
	}
	return id, nil
}
