package state

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

func (c *changes) fold(id string) *resFold {
	f := c.res[id]
	if f == nil {
		f = &resFold{}
		c.res[id] = f
		c.resIDs = append(c.resIDs, id)
	}
	return f
}

func (c *changes) reserve(r reservation) {
	f := c.fold(r.completion)
	switch f.state {
	case resUntouched:
		f.state, f.row = resEither, r
	case resAbsent:
		f.state, f.row = resOwn, r
	}
	// resOwn, resEither: a reservation is there already; the insert would
	// do nothing.
}

func (c *changes) remove(id string) {
	f := c.fold(id)
	f.state, f.deleted = resAbsent, true
}

// release frees a completion's reservation if it is still outstanding.
func (c *changes) release(id string) {
	f := c.fold(id)
	switch f.state {
	case resUntouched:
		// Whatever the table holds, released in SQL.
		f.fromTable = true
	case resEither:
		// The table's earlier reservation if any, else this transaction's:
		// insert it the way the reserve would have, then release in SQL.
		row := f.row
		f.preInsert, f.fromTable = &row, true
	case resOwn:
		c.budget(f.row.account, f.row.key, f.row.day, f.row.month, 0, -f.row.cost)
	case resAbsent:
		return
	}
	f.state, f.deleted = resAbsent, true
}

// extendReservationsSQL moves reservations' ends later, never earlier.
func extendReservationsSQL(res string) string {
	return fmt.Sprintf(`UPDATE %s AS r SET expires_at = greatest(r.expires_at, u.t)
		FROM unnest($1::text[], $2::timestamptz[]) AS u(id, t) WHERE r.completion_id = u.id`, res)
}

// extend records a renewal's new reservation end (zero: the completion
// holds no reservation). A reservation this transaction reserves takes it
// at once; the table's is updated at flush, after the inserts.
func (c *changes) extend(id string, until time.Time) {
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
func (c *changes) queueExtensions(b *pgx.Batch) {
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
