package state

import (
	"cmp"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// flush queues, in this order: the summed budget deltas (so that every
// row a release frees exists), the releases that depend on the table's
// earlier reservations, the other deletions, the transaction's remaining
// reservations, the window prunes and increments, and the limits.
func (c *changes) Flush(b *pgx.Batch) {
	p := c.p
	if len(c.budgets) > 0 {
		keys := make([]budgetKey, 0, len(c.budgets))
		for k := range c.budgets {
			keys = append(keys, k)
		}
		// One order for every transaction: concurrent ones lock the rows
		// they share alike.
		slices.SortFunc(keys, func(a, b budgetKey) int {
			return cmp.Or(cmp.Compare(a.scope, b.scope), cmp.Compare(a.id, b.id), cmp.Compare(a.period, b.period))
		})
		n := len(keys)
		scope, id, account, period := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		spent, reserved := make([]int64, n), make([]int64, n)
		for i, k := range keys {
			d := c.budgets[k]
			scope[i], id[i], account[i], period[i], spent[i], reserved[i] = k.scope, k.id, d.account, k.period, d.spent, d.reserved
		}
		b.Queue(p.addBudget, scope, id, account, period, spent, reserved)
	}

	var pre, final []reservation
	var fromTable, deleted []string
	for _, id := range c.resIDs {
		f := c.res[id]
		if f.preInsert != nil {
			pre = append(pre, *f.preInsert)
		}
		if f.fromTable {
			fromTable = append(fromTable, id)
		} else if f.deleted {
			deleted = append(deleted, id)
		}
		if f.state == resOwn || f.state == resEither {
			final = append(final, f.row)
		}
	}
	c.queueReservations(b, pre)
	if len(fromTable) > 0 {
		b.Queue(p.abandon, fromTable)
	}
	if len(deleted) > 0 {
		b.Queue(p.deleteRes, deleted)
	}
	c.queueReservations(b, final)
	c.queueExtensions(b)

	var pruneAcc []string
	var pruneUpto []int64
	for acc, w := range c.windows {
		if w.prunedSet {
			pruneAcc, pruneUpto = append(pruneAcc, acc), append(pruneUpto, w.pruned)
		}
	}
	wkeys := make([]windowKey, 0, len(c.winRows))
	for k := range c.winRows {
		wkeys = append(wkeys, k)
	}
	if len(pruneAcc) > 0 {
		b.Queue(p.pruneWindow, pruneAcc, pruneUpto)
	}
	if len(wkeys) > 0 {
		slices.SortFunc(wkeys, func(a, b windowKey) int {
			return cmp.Or(cmp.Compare(a.scope, b.scope), cmp.Compare(a.id, b.id), cmp.Compare(a.second, b.second))
		})
		n := len(wkeys)
		scope, id, account := make([]string, n), make([]string, n), make([]string, n)
		second, requests, tokens := make([]int64, n), make([]int64, n), make([]int64, n)
		for i, k := range wkeys {
			d := c.winRows[k]
			scope[i], id[i], account[i], second[i], requests[i], tokens[i] = k.scope, k.id, d.account, k.second, d.requests, d.tokens
		}
		b.Queue(p.addWindow, scope, id, account, second, requests, tokens)
	}
	for _, q := range c.limits {
		b.Queue(q.sql, q.args...)
	}
}

func (c *changes) queueReservations(b *pgx.Batch, rs []reservation) {
	if len(rs) == 0 {
		return
	}
	n := len(rs)
	completion, account, key, day, month := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	cost, tokens := make([]int64, n), make([]int64, n)
	reservedAt, expiresAt := make([]time.Time, n), make([]time.Time, n)
	for i, r := range rs {
		completion[i], account[i], key[i], day[i], month[i] = r.completion, r.account, r.key, r.day, r.month
		cost[i], tokens[i], reservedAt[i], expiresAt[i] = r.cost, r.tokens, r.reservedAt, r.expiresAt
	}
	b.Queue(c.p.insertRes, completion, account, key, cost, tokens, day, month, reservedAt, expiresAt)
}
