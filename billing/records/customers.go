package records

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/projections"
)

// NewCustomerLinks returns the projector of the customer links of schema,
// from billing.customer_linked: billing_customers (each account's Stripe
// customer, which the reporter's due records join) and
// billing_customer_links (each customer's account, the first linked in the
// global order, which the webhooks look events up by).
func NewCustomerLinks(schema string) projections.Projector {
	byAccount := fmt.Sprintf(`INSERT INTO %s (account_id, stripe_customer_id) VALUES ($1, $2)
		ON CONFLICT (account_id) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id`, projections.Table(schema, "billing_customers"))
	links := projections.Table(schema, "billing_customer_links")
	byCustomer := fmt.Sprintf(`INSERT INTO %[1]s AS l (stripe_customer_id, account_id, position) VALUES ($1, $2, $3)
		ON CONFLICT (stripe_customer_id) DO UPDATE SET account_id = EXCLUDED.account_id, position = EXCLUDED.position
		WHERE EXCLUDED.position < l.position`, links)
	return &statements{name: "billing_customer_links", queue: func(b *pgx.Batch, e events.Envelope, d events.Data) {
		if d, ok := d.(events.BillingCustomerLinked); ok {
			b.Queue(byAccount, d.AccountID, d.StripeCustomerID)
			b.Queue(byCustomer, d.StripeCustomerID, d.AccountID, e.Position)
		}
	}}
}

// ErrBehind: a read model had not applied every event committed before a
// lookup within the wait; the caller may retry.
var ErrBehind = errors.New("billing read model is behind")

// CustomerLinks answers which account a Stripe customer is linked to from
// the live billing_customer_links.
type CustomerLinks struct {
	// Q reads the live read model.
	Q projections.Querier
	// Fresh, when set, is called after a miss: it returns once the read
	// model has applied every event committed before it was called (see
	// WaitFresh), so a link made a moment ago is not missed, and the
	// lookup is made again.
	Fresh func(ctx context.Context) error
}

// AccountForCustomer returns the account a Stripe customer is linked to,
// "" when none is.
func (c CustomerLinks) AccountForCustomer(ctx context.Context, customerID string) (string, error) {
	id, err := accountForCustomer(ctx, c.Q, customerID)
	if id != "" || err != nil || c.Fresh == nil {
		return id, err
	}
	if err := c.Fresh(ctx); err != nil {
		return "", fmt.Errorf("account for customer %s: %w", customerID, err)
	}
	return accountForCustomer(ctx, c.Q, customerID)
}

func accountForCustomer(ctx context.Context, q projections.Querier, customerID string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT account_id FROM billing_customer_links WHERE stripe_customer_id = $1`, customerID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("account for customer %s: %w", customerID, err)
	}
	return id, nil
}

// LiveCheckpoint is the checkpoint of the live read models' follower (its
// default name, projections.FollowerConfig.Name).
const LiveCheckpoint = "projections:" + projections.LiveSchema

// freshPoll is how often WaitFresh reads the follower's checkpoint.
const freshPoll = 20 * time.Millisecond

// WaitFresh returns a func that waits until the follower whose checkpoint
// is named checkpoint (projections.FollowerConfig.Name; "projections:public"
// for the live read models) has applied every event readable in store when
// it was called, at most wait; then it fails with ErrBehind.
func WaitFresh(store *pgstore.Store, checkpoint string, wait time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		head, err := store.Head(ctx)
		if err != nil {
			return err
		}
		deadline := time.Now().Add(wait)
		for {
			cp, err := pgstore.LoadCheckpoint(ctx, store.Pool(), checkpoint)
			if err != nil {
				return err
			}
			if !cp.Less(head) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%w: %s at position %d, events up to %d after %s", ErrBehind, checkpoint, cp.Position, head.Position, wait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(freshPoll):
			}
		}
	}
}
