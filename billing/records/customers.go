package records

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// AccountForCustomer returns the account a Stripe customer is linked to,
// "" when none is. It reads the event store's billing.customer_linked
// events (indexed by migration 0004).
func AccountForCustomer(ctx context.Context, q projections.Querier, customerID string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT data->>'account_id' FROM events
		WHERE type = $1 AND data->>'stripe_customer_id' = $2 ORDER BY position LIMIT 1`,
		events.TypeBillingCustomerLinked, customerID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("account for customer %s: %w", customerID, err)
	}
	return id, nil
}
