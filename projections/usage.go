package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
)

// usageLedger keeps usage_ledger (one row per successful completion) and
// usage_rollups (per account, UTC day, key and model).
type usageLedger struct {
	insert string
}

// NewUsageLedger returns the projector of usage_ledger and usage_rollups in
// schema.
func NewUsageLedger(schema string) Projector {
	// One statement: the rollup is added to only when the ledger row was
	// inserted, so an event applied twice (past the stream guard, e.g. the
	// same completion recorded under another event id) is counted once.
	return &usageLedger{insert: fmt.Sprintf(`
		WITH ins AS (
			INSERT INTO %[1]s (completion_id, account_id, key_id, model, provider, upstream_model,
				prompt_tokens, completion_tokens, tokens_estimated, cost_nano_usd, occurred_at, event_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (completion_id) DO NOTHING
			RETURNING account_id, key_id, model, prompt_tokens, completion_tokens, cost_nano_usd
		)
		INSERT INTO %[2]s AS r (account_id, day, key_id, model, requests, prompt_tokens, completion_tokens, cost_nano_usd)
		SELECT account_id, $13::date, key_id, model, 1, prompt_tokens, completion_tokens, cost_nano_usd FROM ins
		ON CONFLICT (account_id, day, key_id, model) DO UPDATE SET
			requests = r.requests + 1,
			prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
			completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
			cost_nano_usd = r.cost_nano_usd + EXCLUDED.cost_nano_usd`,
		table(schema, "usage_ledger"), table(schema, "usage_rollups"))}
}

// Name implements Projector.
func (p *usageLedger) Name() string { return "usage_ledger" }

// Apply implements Projector.
func (p *usageLedger) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return applyQueued(ctx, tx, p, p.Name(), e)
}

func (p *usageLedger) queue(b *pgx.Batch, e events.Envelope, d events.Data) error {
	s, ok := d.(events.CompletionSucceeded)
	if !ok {
		return nil
	}
	at := e.OccurredAt.UTC()
	b.Queue(p.insert, s.CompletionID, s.AccountID, s.KeyID, s.Model, s.Provider, s.UpstreamModel,
		s.Usage.PromptTokens, s.Usage.CompletionTokens, s.Usage.Estimated, s.CostNanoUSD, at, e.EventID,
		at.Format(time.DateOnly))
	return nil
}

// UsageRow is one group of a usage report.
type UsageRow struct {
	// Group is the model, the key id, the UTC day (YYYY-MM-DD), or "" for
	// the total.
	Group            string
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	CostNanoUSD      int64
}

// Usage reports an account's successful completions in [from, to) of the
// live model, grouped by "model", "day", "key", or not at all ("": one
// total row, zero when there was no usage), sorted by Group. Whole UTC days
// are answered from the daily rollups; any other range from the ledger.
func Usage(ctx context.Context, q Querier, accountID string, from, to time.Time, groupBy string) ([]UsageRow, error) {
	from, to = from.UTC(), to.UTC()
	useRollups := isMidnight(from) && isMidnight(to)
	var group string
	switch groupBy {
	case "model":
		group = "model"
	case "key":
		group = "key_id"
	case "day":
		group = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
		if useRollups {
			group = "to_char(day, 'YYYY-MM-DD')"
		}
	case "":
		group = "''"
	default:
		return nil, fmt.Errorf("usage: group by %q: want model, day, key or nothing", groupBy)
	}
	var sql string
	var args []any
	if useRollups {
		sql = fmt.Sprintf(`SELECT %s AS g, coalesce(sum(requests), 0)::bigint, coalesce(sum(prompt_tokens), 0)::bigint,
				coalesce(sum(completion_tokens), 0)::bigint, coalesce(sum(cost_nano_usd), 0)::bigint
			FROM %s WHERE account_id = $1 AND day >= $2::date AND day < $3::date`, group, table(LiveSchema, "usage_rollups"))
		args = []any{accountID, from.Format(time.DateOnly), to.Format(time.DateOnly)}
	} else {
		sql = fmt.Sprintf(`SELECT %s AS g, count(*), coalesce(sum(prompt_tokens), 0)::bigint,
				coalesce(sum(completion_tokens), 0)::bigint, coalesce(sum(cost_nano_usd), 0)::bigint
			FROM %s WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3`, group, table(LiveSchema, "usage_ledger"))
		args = []any{accountID, from, to}
	}
	if groupBy != "" {
		// A total has no GROUP BY, so that it is one row even when empty.
		sql += ` GROUP BY 1 ORDER BY ` + group + ` COLLATE "C"`
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("usage of %s: %w", accountID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UsageRow, error) {
		var u UsageRow
		err := r.Scan(&u.Group, &u.Requests, &u.PromptTokens, &u.CompletionTokens, &u.CostNanoUSD)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("usage of %s: %w", accountID, err)
	}
	return out, nil
}

func isMidnight(t time.Time) bool {
	return t.Equal(t.Truncate(24 * time.Hour))
}
