package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
)

// quotaState keeps quota_state (spent and reserved per scope and period),
// quota_reservations (outstanding), quota_windows (admissions per second)
// and quota_limits (plans, overrides, suspensions). Every value comes from
// events: windows are pruned by the event's time, never the clock.
type quotaState struct {
	addBudget, insertRes, deleteRes, abandon, addWindow, pruneWindow, upsertLimits, setSuspension string
}

// NewQuotaState returns the projector of the quota read models in schema.
func NewQuotaState(schema string) Projector {
	st, res, win, lim := table(schema, "quota_state"), table(schema, "quota_reservations"), table(schema, "quota_windows"), table(schema, "quota_limits")
	addBudget := fmt.Sprintf(`INSERT INTO %s AS q (scope, id, account_id, period, spent, reserved)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
		ON CONFLICT (scope, id, period) DO UPDATE SET spent = q.spent + EXCLUDED.spent, reserved = q.reserved + EXCLUDED.reserved`, st)
	return &quotaState{
		addBudget: addBudget,
		insertRes: fmt.Sprintf(`INSERT INTO %s (completion_id, account_id, key_id, cost, tokens, day, month, reserved_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (completion_id) DO NOTHING`, res),
		deleteRes: fmt.Sprintf(`DELETE FROM %s WHERE completion_id = $1`, res),
		// An abandoned or released completion's reservation is released
		// with whatever it reserved, once; a completion without one (or
		// whose reservation is gone already) releases nothing.
		abandon: fmt.Sprintf(`WITH del AS (DELETE FROM %s WHERE completion_id = $1 RETURNING account_id, key_id, cost, day, month)
			UPDATE %s AS q SET reserved = q.reserved - del.cost FROM del
			WHERE (q.scope = 'account' AND q.id = del.account_id OR q.scope = 'key' AND q.id = del.key_id)
			  AND q.period IN ('day:' || del.day, 'month:' || del.month)`, res, st),
		addWindow: fmt.Sprintf(`INSERT INTO %s AS w (scope, id, account_id, second, requests, tokens)
			VALUES ('account', $1, $1, $3, 1, $4), ('key', $2, $1, $3, 1, $4)
			ON CONFLICT (scope, id, second) DO UPDATE SET requests = w.requests + 1, tokens = w.tokens + EXCLUDED.tokens`, win),
		pruneWindow: fmt.Sprintf(`DELETE FROM %s WHERE account_id = $1 AND second <= $2`, win),
		upsertLimits: fmt.Sprintf(`INSERT INTO %s AS l (scope, id, account_id, plan, limits, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (scope, id) DO UPDATE SET plan = CASE WHEN EXCLUDED.plan = '' THEN l.plan ELSE EXCLUDED.plan END,
				limits = CASE WHEN $7 THEN EXCLUDED.limits ELSE l.limits END, updated_at = EXCLUDED.updated_at`, lim),
		setSuspension: fmt.Sprintf(`UPDATE %s SET suspension = $3, updated_at = $4 WHERE scope = 'key' AND id = $1 AND account_id = $2`, lim),
	}
}

// Name implements Projector.
func (p *quotaState) Name() string { return "quota_state" }

// Apply implements Projector.
func (p *quotaState) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return applyQueued(ctx, tx, p, p.Name(), e)
}

func (p *quotaState) budget(b *pgx.Batch, account, key, day, month string, spent, reserved int64) {
	b.Queue(p.addBudget,
		[]string{"account", "account", "key", "key"}, []string{account, account, key, key}, []string{account, account, account, account},
		[]string{"day:" + day, "month:" + month, "day:" + day, "month:" + month},
		[]int64{spent, spent, spent, spent}, []int64{reserved, reserved, reserved, reserved})
}

func (p *quotaState) queue(b *pgx.Batch, e events.Envelope, d events.Data) error {
	at := e.OccurredAt.UTC()
	noLimits, _ := json.Marshal(events.LimitOverrides{})
	switch d := d.(type) {
	case events.QuotaReserved:
		p.budget(b, d.AccountID, d.KeyID, d.Day, d.Month, 0, d.CostNanoUSD)
		b.Queue(p.insertRes, d.CompletionID, d.AccountID, d.KeyID, d.CostNanoUSD, d.Tokens, d.Day, d.Month, at, d.ExpiresAt)
		sec := at.Unix()
		b.Queue(p.addWindow, d.AccountID, d.KeyID, sec, d.Tokens)
		b.Queue(p.pruneWindow, d.AccountID, sec-2*int64(quota.Window/time.Second))
	case events.QuotaSettled:
		p.budget(b, d.AccountID, d.KeyID, d.Day, d.Month, d.CostNanoUSD, -d.ReservedNanoUSD)
		b.Queue(p.deleteRes, d.CompletionID)
	case events.QuotaReleased:
		// Released like an abandonment: only while still outstanding. An
		// abandonment appends completion.abandoned and quota.released
		// together; the first frees the reservation, the second finds
		// nothing left (releasing both would count it back twice).
		b.Queue(p.abandon, d.CompletionID)
	case events.CompletionAbandoned:
		b.Queue(p.abandon, d.CompletionID)
	case events.AccountCreated:
		b.Queue(p.upsertLimits, "account", d.AccountID, d.AccountID, d.Plan, noLimits, at, false)
	case events.AccountPlanChanged:
		b.Queue(p.upsertLimits, "account", d.AccountID, d.AccountID, d.Plan, noLimits, at, false)
	case events.AccountLimitsChanged:
		raw, err := json.Marshal(d.Limits)
		if err != nil {
			return err
		}
		b.Queue(p.upsertLimits, "account", d.AccountID, d.AccountID, "", raw, at, true)
	case events.APIKeyIssued:
		b.Queue(p.upsertLimits, "key", d.KeyID, d.AccountID, "", noLimits, at, false)
	case events.APIKeyLimitsChanged:
		raw, err := json.Marshal(d.Limits)
		if err != nil {
			return err
		}
		b.Queue(p.upsertLimits, "key", d.KeyID, d.AccountID, "", raw, at, true)
	case events.APIKeySuspended:
		raw, err := json.Marshal(d)
		if err != nil {
			return err
		}
		b.Queue(p.setSuspension, d.KeyID, d.AccountID, raw, at)
	case events.APIKeyUnsuspended:
		b.Queue(p.setSuspension, d.KeyID, d.AccountID, nil, at)
	}
	return nil
}

// QuotaStateRow is one scope's budget figures in one period.
type QuotaStateRow struct {
	Scope    string `json:"scope"`
	ID       string `json:"id"`
	Period   string `json:"period"`
	Spent    int64  `json:"spent_nano_usd"`
	Reserved int64  `json:"reserved_nano_usd"`
}

// QuotaStateOf returns an account's and its keys' rows of the live
// quota_state, ordered by scope, id and period.
func QuotaStateOf(ctx context.Context, q Querier, accountID string) ([]QuotaStateRow, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT scope, id, period, spent, reserved FROM %s WHERE account_id = $1
		ORDER BY scope, id, period`, table(LiveSchema, "quota_state")), accountID)
	if err != nil {
		return nil, fmt.Errorf("quota state of %s: %w", accountID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (QuotaStateRow, error) {
		var s QuotaStateRow
		err := r.Scan(&s.Scope, &s.ID, &s.Period, &s.Spent, &s.Reserved)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("quota state of %s: %w", accountID, err)
	}
	return out, nil
}

// QuotaSeeder returns a quota.Seeder reading the live quota read models:
// the current periods' budgets, the last minute's windows and the
// outstanding reservations of an account.
func QuotaSeeder(q Querier) quota.Seeder {
	return func(ctx context.Context, accountID string, now time.Time) (quota.Snapshot, error) {
		snap := quota.Snapshot{Budgets: map[string]map[string]quota.Budget{}, Windows: map[string]map[int64]quota.Bucket{}}
		day, month, _, _ := quota.Periods(now)
		scopeName := func(scope, id string) string {
			if scope == "account" {
				return "account"
			}
			return "key:" + id
		}
		rows, err := q.Query(ctx, fmt.Sprintf(`SELECT scope, id, period, spent, reserved FROM %s
			WHERE account_id = $1 AND period IN ($2, $3)`, table(LiveSchema, "quota_state")), accountID, "day:"+day, "month:"+month)
		if err != nil {
			return snap, fmt.Errorf("seed %s: %w", accountID, err)
		}
		for rows.Next() {
			var scope, id, period string
			var spent, reserved int64
			if err := rows.Scan(&scope, &id, &period, &spent, &reserved); err != nil {
				rows.Close()
				return snap, fmt.Errorf("seed %s: %w", accountID, err)
			}
			s := scopeName(scope, id)
			if snap.Budgets[s] == nil {
				snap.Budgets[s] = map[string]quota.Budget{}
			}
			snap.Budgets[s][period] = quota.Budget{Spent: money.NanoUSD(spent), Reserved: money.NanoUSD(reserved)}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return snap, fmt.Errorf("seed %s: %w", accountID, err)
		}
		rows, err = q.Query(ctx, fmt.Sprintf(`SELECT scope, id, second, requests, tokens FROM %s WHERE account_id = $1 AND second > $2`,
			table(LiveSchema, "quota_windows")), accountID, now.Unix()-int64(quota.Window/time.Second))
		if err != nil {
			return snap, fmt.Errorf("seed %s: %w", accountID, err)
		}
		for rows.Next() {
			var scope, id string
			var sec int64
			var b quota.Bucket
			if err := rows.Scan(&scope, &id, &sec, &b.Requests, &b.Tokens); err != nil {
				rows.Close()
				return snap, fmt.Errorf("seed %s: %w", accountID, err)
			}
			s := scopeName(scope, id)
			if snap.Windows[s] == nil {
				snap.Windows[s] = map[int64]quota.Bucket{}
			}
			snap.Windows[s][sec] = b
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return snap, fmt.Errorf("seed %s: %w", accountID, err)
		}
		rows, err = q.Query(ctx, fmt.Sprintf(`SELECT completion_id, key_id, cost, tokens, day, month, expires_at FROM %s WHERE account_id = $1`,
			table(LiveSchema, "quota_reservations")), accountID)
		if err != nil {
			return snap, fmt.Errorf("seed %s: %w", accountID, err)
		}
		snap.Reservations, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (quota.Reservation, error) {
			var res quota.Reservation
			var cost int64
			err := r.Scan(&res.ID, &res.KeyID, &cost, &res.Tokens, &res.Day, &res.Month, &res.ExpiresAt)
			res.Cost = money.NanoUSD(cost)
			return res, err
		})
		if err != nil {
			return snap, fmt.Errorf("seed %s: %w", accountID, err)
		}
		return snap, nil
	}
}

// PlanBudgetUse is what the accounts of one plan have spent and reserved
// in a budget period.
type PlanBudgetUse struct {
	Plan     string
	Accounts int64
	Used     int64 // nano-USD spent plus reserved
}

// BudgetUseByPlan sums, per plan, what its accounts used in period
// ("day:YYYY-MM-DD" or "month:YYYY-MM").
func BudgetUseByPlan(ctx context.Context, q Querier, period string) ([]PlanBudgetUse, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT l.plan, count(*), coalesce(sum(s.spent + s.reserved), 0)::bigint
		FROM %s l LEFT JOIN %s s ON s.scope = 'account' AND s.id = l.id AND s.period = $1
		WHERE l.scope = 'account' GROUP BY l.plan ORDER BY l.plan`,
		table(LiveSchema, "quota_limits"), table(LiveSchema, "quota_state")), period)
	if err != nil {
		return nil, fmt.Errorf("budget use by plan: %w", err)
	}
	defer rows.Close()
	var out []PlanBudgetUse
	for rows.Next() {
		var u PlanBudgetUse
		if err := rows.Scan(&u.Plan, &u.Accounts, &u.Used); err != nil {
			return nil, fmt.Errorf("budget use by plan: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
