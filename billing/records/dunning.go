package records

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// NewDunning returns the projector of billing_dunning in schema: an
// account is in it from a failed payment (billing.payment_failed) until
// the payment is made (billing.payment_succeeded) or the account is
// downgraded (account.downgraded), with the earliest grace end of the
// failures since.
func NewDunning(schema string) projections.Projector {
	t := projections.Table(schema, "billing_dunning")
	failed := fmt.Sprintf(`INSERT INTO %[1]s AS d (account_id, grace_until) VALUES ($1, $2)
		ON CONFLICT (account_id) DO UPDATE SET grace_until = least(d.grace_until, EXCLUDED.grace_until)`, t)
	resolved := fmt.Sprintf(`DELETE FROM %s WHERE account_id = $1`, t)
	types := []string{events.TypeBillingPaymentFailed, events.TypeBillingPaymentSucceeded, events.TypeAccountDowngraded}
	return &statements{name: "billing_dunning", types: types, queue: func(b *pgx.Batch, _ events.Envelope, d events.Data) {
		switch d := d.(type) {
		case events.BillingPaymentFailed:
			b.Queue(failed, d.AccountID, d.GraceUntil)
		case events.BillingPaymentSucceeded:
			b.Queue(resolved, d.AccountID)
		case events.AccountDowngraded:
			b.Queue(resolved, d.AccountID)
		}
	}}
}

// DunningCandidates returns the accounts of the live read model whose
// payment failed, was neither paid nor followed by a downgrade, and whose
// grace ended by now. The read model may lag: billing.DecideDowngrade,
// on the account's stream, has the last word.
func DunningCandidates(ctx context.Context, q projections.Querier, now time.Time) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT account_id FROM billing_dunning WHERE grace_until <= $1 ORDER BY account_id`, now)
	if err != nil {
		return nil, fmt.Errorf("dunning candidates: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("dunning candidates: %w", err)
	}
	return ids, nil
}
