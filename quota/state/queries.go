package state

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota"
)

// Row is one scope's budget figures in one period.
type Row struct {
	Scope    string `json:"scope"`
	ID       string `json:"id"`
	Period   string `json:"period"`
	Spent    int64  `json:"spent_nano_usd"`
	Reserved int64  `json:"reserved_nano_usd"`
}

// Of returns an account's and its keys' rows of the live
// quota_state, ordered by scope, id and period.
func Of(ctx context.Context, q projections.Querier, accountID string) ([]Row, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT scope, id, period, spent, reserved FROM %s WHERE account_id = $1
		ORDER BY scope, id, period`, projections.Table(projections.LiveSchema, "quota_state")), accountID)
	if err != nil {
		return nil, fmt.Errorf("quota state of %s: %w", accountID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var s Row
		err := r.Scan(&s.Scope, &s.ID, &s.Period, &s.Spent, &s.Reserved)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("quota state of %s: %w", accountID, err)
	}
	return out, nil
}

// Seeder returns a quota.Seeder reading the live quota read models:
// the current periods' budgets, the last minute's windows and the
// outstanding reservations of an account.
func Seeder(q projections.Querier) quota.Seeder {
	return func(ctx context.Context, accountID string, now time.Time) (quota.Snapshot, error) {
		snap := quota.Snapshot{Budgets: map[string]map[string]quota.Budget{}, Windows: map[string]map[int64]quota.Bucket{}}
		day, month, _, _ := quota.Periods(now)
		scopeName := func(scope, id string) string {
			if scope == "account" {
				return quota.ScopeAccount
			}
			return quota.ScopeKey(id)
		}
		rows, err := q.Query(ctx, fmt.Sprintf(`SELECT scope, id, period, spent, reserved FROM %s
			WHERE account_id = $1 AND period IN ($2, $3)`, projections.Table(projections.LiveSchema, "quota_state")), accountID, "day:"+day, "month:"+month)
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
			projections.Table(projections.LiveSchema, "quota_windows")), accountID, now.Unix()-int64(quota.Window/time.Second))
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
			projections.Table(projections.LiveSchema, "quota_reservations")), accountID)
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
func BudgetUseByPlan(ctx context.Context, q projections.Querier, period string) ([]PlanBudgetUse, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT l.plan, count(*), coalesce(sum(s.spent + s.reserved), 0)::bigint
		FROM %s l LEFT JOIN %s s ON s.scope = 'account' AND s.id = l.id AND s.period = $1
		WHERE l.scope = 'account' GROUP BY l.plan ORDER BY l.plan`,
		projections.Table(projections.LiveSchema, "quota_limits"), projections.Table(projections.LiveSchema, "quota_state")), period)
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
