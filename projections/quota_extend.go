package projections

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// extendReservationsSQL moves reservations' ends later, never earlier.
func extendReservationsSQL(res string) string {
	return fmt.Sprintf(`UPDATE %s AS r SET expires_at = greatest(r.expires_at, u.t)
		FROM unnest($1::text[], $2::timestamptz[]) AS u(id, t) WHERE r.completion_id = u.id`, res)
}

// extend records a renewal's new reservation end (zero: the completion
// holds no reservation). A reservation this transaction reserves takes it
// at once; the table's is updated at flush, after the inserts.
func (c *quotaChanges) extend(id string, until time.Time) {
	if until.IsZero() {
		return
	}
	until = until.UTC()
	if f := c.res[id]; f != nil && (f.state == resOwn || f.state == resEither) && until.After(f.row.expiresAt) {
		f.row.expiresAt = until
	}
	if c.extends == nil {
		c.extends = map[string]time.Time{}
	}
	if until.After(c.extends[id]) {
		c.extends[id] = until
	}
}

// queueExtensions updates the ends of reservations still held at the end
// of the transaction.
func (c *quotaChanges) queueExtensions(b *pgx.Batch) {
	var ids []string
	var ts []time.Time
	for _, id := range slices.Sorted(maps.Keys(c.extends)) {
		if f := c.res[id]; f != nil && f.state == resAbsent {
			continue
		}
		ids, ts = append(ids, id), append(ts, c.extends[id])
	}
	if len(ids) > 0 {
		b.Queue(c.p.extendRes, ids, ts)
	}
}
