// Package state is the quota read model: quota_state (spent and reserved
// per scope and period), quota_reservations (outstanding), quota_windows
// (admissions per second) and quota_limits (plans, overrides,
// suspensions), kept from the event log by a projector the server wires
// into the read models' Set, and the queries over it: what seeds a
// limiter (Seeder), an account's rows (Of), and each plan's budget use.
package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota"
)

// projector keeps quota_state (spent and reserved per scope and period),
// quota_reservations (outstanding), quota_windows (admissions per second)
// and quota_limits (plans, overrides, suspensions). Every value comes from
// events: windows are pruned by the event's time, never the clock.
//
// It is an accumulator: a transaction's budget and window increments are
// summed per row in Go and written with one upsert per row, and its
// reservations are folded per completion, so that a batch of many
// completions of few accounts writes each budget row once instead of once
// per event.
type projector struct {
	addBudget, insertRes, deleteRes, abandon, addWindow, pruneWindow, upsertLimits, setSuspension string
	extendRes                                                                                     string
}

// New returns the projector of the quota read models in schema.
func New(schema string) projections.Projector {
	table := projections.Table
	st, res, win, lim := table(schema, "quota_state"), table(schema, "quota_reservations"), table(schema, "quota_windows"), table(schema, "quota_limits")
	return &projector{
		addBudget: fmt.Sprintf(`INSERT INTO %s AS q (scope, id, account_id, period, spent, reserved)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
			ON CONFLICT (scope, id, period) DO UPDATE SET spent = q.spent + EXCLUDED.spent, reserved = q.reserved + EXCLUDED.reserved`, st),
		// ON CONFLICT DO NOTHING: a reservation recorded twice keeps the
		// first (its budget was added twice, as it was reserved twice).
		insertRes: fmt.Sprintf(`INSERT INTO %s (completion_id, account_id, key_id, cost, tokens, day, month, reserved_at, expires_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[],
				$8::timestamptz[], $9::timestamptz[])
			ON CONFLICT (completion_id) DO NOTHING`, res),
		deleteRes: fmt.Sprintf(`DELETE FROM %s WHERE completion_id = ANY($1::text[])`, res),
		// An abandoned or released completion's reservation is released
		// with whatever it reserved, once; a completion without one (or
		// whose reservation is gone already) releases nothing. Several
		// reservations may free the same budget row, so their costs are
		// summed per row first (an UPDATE applies one source row per
		// target row).
		abandon: fmt.Sprintf(`WITH del AS (
				DELETE FROM %[1]s WHERE completion_id = ANY($1::text[]) RETURNING account_id, key_id, cost, day, month
			), freed AS (
				SELECT r.scope, r.id, r.period, sum(del.cost)::bigint AS cost
				FROM del CROSS JOIN LATERAL (VALUES
					('account', del.account_id, 'day:' || del.day), ('account', del.account_id, 'month:' || del.month),
					('key', del.key_id, 'day:' || del.day), ('key', del.key_id, 'month:' || del.month)) AS r(scope, id, period)
				GROUP BY 1, 2, 3
			)
			UPDATE %[2]s AS q SET reserved = q.reserved - f.cost FROM freed f
			WHERE q.scope = f.scope AND q.id = f.id AND q.period = f.period`, res, st),
		addWindow: fmt.Sprintf(`INSERT INTO %s AS w (scope, id, account_id, second, requests, tokens)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
			ON CONFLICT (scope, id, second) DO UPDATE SET requests = w.requests + EXCLUDED.requests, tokens = w.tokens + EXCLUDED.tokens`, win),
		// One index range scan per account (the lateral subquery is not
		// flattened into a join: OFFSET 0), whatever the statistics say;
		// joined, the rows were scanned whole for each batch when they
		// were stale or missing.
		pruneWindow: fmt.Sprintf(`DELETE FROM %[1]s WHERE ctid = ANY(ARRAY(
			SELECT x.ctid FROM unnest($1::text[], $2::bigint[]) AS u(account_id, upto)
			CROSS JOIN LATERAL (SELECT ctid FROM %[1]s AS w WHERE w.account_id = u.account_id AND w.second <= u.upto OFFSET 0) x))`, win),
		upsertLimits: fmt.Sprintf(`INSERT INTO %s AS l (scope, id, account_id, plan, limits, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (scope, id) DO UPDATE SET plan = CASE WHEN EXCLUDED.plan = '' THEN l.plan ELSE EXCLUDED.plan END,
				limits = CASE WHEN $7 THEN EXCLUDED.limits ELSE l.limits END, updated_at = EXCLUDED.updated_at`, lim),
		setSuspension: fmt.Sprintf(`UPDATE %s SET suspension = $3, updated_at = $4 WHERE scope = 'key' AND id = $1 AND account_id = $2`, lim),
		extendRes:     extendReservationsSQL(res),
	}
}

// Name implements Projector.
func (p *projector) Name() string { return "quota_state" }

// Apply implements Projector.
func (p *projector) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return projections.ApplyPending(ctx, tx, p, p.Name(), e)
}

// Handles implements projections.Selective: the types changes.Add reads.
func (p *projector) Handles(t string) bool {
	switch t {
	case events.TypeQuotaReserved, events.TypeQuotaSettled, events.TypeQuotaReleased, events.TypeCompletionAbandoned,
		events.TypeCompletionLeaseRenewed, events.TypeAccountCreated, events.TypeAccountPlanChanged, events.TypeAccountLimitsChanged,
		events.TypeAPIKeyIssued, events.TypeAPIKeyLimitsChanged, events.TypeAPIKeySuspended, events.TypeAPIKeyUnsuspended:
		return true
	}
	return false
}

func (p *projector) Pending() projections.Pending {
	return &changes{p: p, budgets: map[budgetKey]*budgetDelta{}, winRows: map[windowKey]*windowDelta{}, windows: map[string]*accountWindows{},
		res: map[string]*resFold{}}
}

// budgetKey names a quota_state row.
type budgetKey struct{ scope, id, period string }

// budgetDelta is what a transaction adds to one quota_state row.
type budgetDelta struct {
	account         string
	spent, reserved int64
}

// windowKey names a quota_windows row.
type windowKey struct {
	scope, id string
	second    int64
}

// windowDelta is what a transaction adds to one quota_windows row.
type windowDelta struct {
	account          string
	requests, tokens int64
}

// accountWindows are which window rows of a transaction are one
// account's, and the highest second its events pruned up to.
type accountWindows struct {
	rows map[windowKey]struct{}
	// pruned is the highest "second <= pruned" bound of the account's
	// prunes; pruned is meaningful only when prunedSet.
	pruned    int64
	prunedSet bool
	// minSecond is the lowest second in rows, so that a prune below every
	// pending row costs no scan.
	minSecond int64
}

// Reservation states of a completion within one transaction, relative to
// what the table held before it.
const (
	// resUntouched: no reservation event of the completion in this
	// transaction yet.
	resUntouched = iota
	// resAbsent: the transaction deleted the completion's reservation
	// (settled or released); the table has none for it at this point.
	resAbsent
	// resOwn: the transaction deleted any previous reservation and then
	// reserved: the table holds row.
	resOwn
	// resEither: reserved while the table's state was unknown: the table
	// holds its earlier reservation if it had one (ON CONFLICT DO NOTHING),
	// else row.
	resEither
)

// reservation is a quota_reservations row.
type reservation struct {
	completion, account, key string
	cost, tokens             int64
	day, month               string
	reservedAt, expiresAt    time.Time
}

// resFold is one completion's reservation writes of a transaction.
type resFold struct {
	state int
	row   reservation
	// preInsert is a reservation to insert (ON CONFLICT DO NOTHING) before
	// the release that depends on the table's earlier state; fromTable
	// says such a release happens (with or without preInsert).
	preInsert *reservation
	fromTable bool
	// deleted: the transaction deletes whatever the table held.
	deleted bool
}

// changes are one transaction's quota writes.
type changes struct {
	p       *projector
	budgets map[budgetKey]*budgetDelta
	winRows map[windowKey]*windowDelta
	windows map[string]*accountWindows
	res     map[string]*resFold
	resIDs  []string // completions in res, in first-seen order
	// extends are reservations' new ends (completion.lease_renewed).
	extends map[string]time.Time
	// limits are quota_limits statements, in event order: they are few and
	// order matters (a suspension updates the key's row).
	limits []queued
}

// queued is one statement and its arguments.
type queued struct {
	sql  string
	args []any
}

func (c *changes) budget(account, key, day, month string, spent, reserved int64) {
	for _, k := range [...]budgetKey{{"account", account, "day:" + day}, {"account", account, "month:" + month},
		{"key", key, "day:" + day}, {"key", key, "month:" + month}} {
		d := c.budgets[k]
		if d == nil {
			d = &budgetDelta{account: account}
			c.budgets[k] = d
		}
		d.spent += spent
		d.reserved += reserved
	}
}

// window adds one admission at second and then prunes the account's
// windows up to prune, as the live statements did one event at a time.
func (c *changes) window(account, key string, second, tokens, prune int64) {
	w := c.windows[account]
	if w == nil {
		w = &accountWindows{rows: map[windowKey]struct{}{}, minSecond: second}
		c.windows[account] = w
	}
	for _, k := range [...]windowKey{{"account", account, second}, {"key", key, second}} {
		d := c.winRows[k]
		if d == nil {
			d = &windowDelta{account: account}
			c.winRows[k] = d
		}
		w.rows[k] = struct{}{}
		d.requests++
		d.tokens += tokens
	}
	w.minSecond = min(w.minSecond, second)
	if !w.prunedSet || prune > w.pruned {
		w.pruned, w.prunedSet = prune, true
	}
	if prune < w.minSecond {
		return
	}
	// Increments already pending for a pruned second are deleted with it;
	// the table's rows are deleted at flush, before the survivors are
	// added.
	w.minSecond = second
	for k := range w.rows {
		if k.second <= prune {
			delete(w.rows, k)
			delete(c.winRows, k)
		} else {
			w.minSecond = min(w.minSecond, k.second)
		}
	}
}

func (c *changes) Add(e events.Envelope, d events.Data) error {
	at := e.OccurredAt.UTC()
	switch d := d.(type) {
	case events.QuotaReserved:
		c.budget(d.AccountID, d.KeyID, d.Day, d.Month, 0, d.CostNanoUSD)
		c.reserve(reservation{completion: d.CompletionID, account: d.AccountID, key: d.KeyID, cost: d.CostNanoUSD, tokens: d.Tokens,
			day: d.Day, month: d.Month, reservedAt: at, expiresAt: d.ExpiresAt})
		sec := at.Unix()
		c.window(d.AccountID, d.KeyID, sec, d.Tokens, sec-2*int64(quota.Window/time.Second))
	case events.QuotaSettled:
		c.budget(d.AccountID, d.KeyID, d.Day, d.Month, d.CostNanoUSD, -d.ReservedNanoUSD)
		c.remove(d.CompletionID)
	case events.QuotaReleased:
		// Released like an abandonment: only while still outstanding. An
		// abandonment appends completion.abandoned and quota.released
		// together; the first frees the reservation, the second finds
		// nothing left (releasing both would count it back twice).
		c.release(d.CompletionID)
	case events.CompletionAbandoned:
		c.release(d.CompletionID)
	case events.CompletionLeaseRenewed:
		c.extend(d.CompletionID, d.ReservationExpiresAt)
	default:
		return c.addLimits(e, d)
	}
	return nil
}

func (c *changes) addLimits(e events.Envelope, d events.Data) error {
	at := e.OccurredAt.UTC()
	p := c.p
	noLimits, err := json.Marshal(events.LimitOverrides{})
	if err != nil {
		return err
	}
	q := func(sql string, args ...any) { c.limits = append(c.limits, queued{sql, args}) }
	switch d := d.(type) {
	case events.AccountCreated:
		q(p.upsertLimits, "account", d.AccountID, d.AccountID, d.Plan, noLimits, at, false)
	case events.AccountPlanChanged:
		q(p.upsertLimits, "account", d.AccountID, d.AccountID, d.Plan, noLimits, at, false)
	case events.AccountLimitsChanged:
		raw, err := json.Marshal(d.Limits)
		if err != nil {
			return err
		}
		q(p.upsertLimits, "account", d.AccountID, d.AccountID, "", raw, at, true)
	case events.APIKeyIssued:
		q(p.upsertLimits, "key", d.KeyID, d.AccountID, "", noLimits, at, false)
	case events.APIKeyLimitsChanged:
		raw, err := json.Marshal(d.Limits)
		if err != nil {
			return err
		}
		q(p.upsertLimits, "key", d.KeyID, d.AccountID, "", raw, at, true)
	case events.APIKeySuspended:
		raw, err := json.Marshal(d)
		if err != nil {
			return err
		}
		q(p.setSuspension, d.KeyID, d.AccountID, raw, at)
	case events.APIKeyUnsuspended:
		q(p.setSuspension, d.KeyID, d.AccountID, nil, at)
	}
	return nil
}
