package usage

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate/tollgate/projections"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
)

// usageLedger keeps usage_ledger (one row per successful completion) and
// usage_rollups (per account, UTC day, key and model). Both are sums over
// completions, so the order of events does not matter and a batch of
// events is written with one set-based statement.
type usageLedger struct {
	insert string
	// rebuild is the projector a rebuild uses: the ledger only, the
	// rollups summed from it at the end (rollups).
	rebuild *usageLedger
	rollups string
}

// New returns the projector of usage_ledger and usage_rollups in
// schema.
func New(schema string) projections.Projector {
	ledger, rollups := projections.Table(schema, "usage_ledger"), projections.Table(schema, "usage_rollups")
	insertLedger := fmt.Sprintf(`INSERT INTO %s (completion_id, account_id, key_id, model, provider, upstream_model,
				prompt_tokens, completion_tokens, tokens_estimated, cost_nano_usd, occurred_at, event_id)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
				$7::bigint[], $8::bigint[], $9::boolean[], $10::bigint[], $11::timestamptz[], $12::uuid[])
			ON CONFLICT (completion_id) DO NOTHING`, ledger)
	// The ledger rows' rollups; from is the rows summed.
	sumRollups := func(from string) string {
		return fmt.Sprintf(`INSERT INTO %s AS r (account_id, day, key_id, model, requests, prompt_tokens, completion_tokens, cost_nano_usd)
		SELECT account_id, (occurred_at AT TIME ZONE 'UTC')::date, key_id, model,
			count(*), sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(cost_nano_usd)::bigint
		FROM %s GROUP BY 1, 2, 3, 4`, rollups, from)
	}
	return &usageLedger{
		// One statement: the rollups are added to only for ledger rows
		// that were inserted, so a completion recorded twice (past the
		// stream guard, e.g. under another event id) is counted once.
		insert: `WITH ins AS (` + insertLedger + `
				RETURNING account_id, key_id, model, prompt_tokens, completion_tokens, cost_nano_usd, occurred_at)
			` + sumRollups("ins") + `
			ON CONFLICT (account_id, day, key_id, model) DO UPDATE SET
				requests = r.requests + EXCLUDED.requests,
				prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
				completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
				cost_nano_usd = r.cost_nano_usd + EXCLUDED.cost_nano_usd`,
		// Summing every ledger row once, at the end, costs a fraction of
		// adding each batch's to its rollups (one upsert per rollup row and
		// batch, nearly one per completion when a batch spans many days).
		rebuild: &usageLedger{insert: insertLedger},
		rollups: sumRollups(ledger),
	}
}

// ForRebuild implements projections.Rebuilding: a rebuild writes the
// ledger only, then sums it into the rollups, which were empty.
func (p *usageLedger) ForRebuild() (projections.Accumulator, []string) {
	return p.rebuild, []string{p.rollups}
}

// Name implements Projector.
func (p *usageLedger) Name() string { return "usage_ledger" }

// Apply implements Projector.
func (p *usageLedger) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return projections.ApplyPending(ctx, tx, p, p.Name(), e)
}

// Handles implements projections.Selective.
func (p *usageLedger) Handles(t string) bool { return t == events.TypeCompletionSucceeded }

func (p *usageLedger) Pending() projections.Pending { return &ledgerRows{sql: p.insert} }

// ledgerRows are the ledger rows of one transaction, column by column.
type ledgerRows struct {
	sql                                          string
	completion, account, key, model, prov, upstr []string
	prompt, completionTokens, cost               []int64
	estimated                                    []bool
	at                                           []time.Time
	// eventID is as bytes: pgx encodes a uuid.UUID through its text.
	eventID [][16]byte
}

func (r *ledgerRows) Add(e events.Envelope, d events.Data) error {
	s, ok := d.(events.CompletionSucceeded)
	if !ok {
		return nil
	}
	r.completion, r.account, r.key = append(r.completion, s.CompletionID), append(r.account, s.AccountID), append(r.key, s.KeyID)
	r.model, r.prov, r.upstr = append(r.model, s.Model), append(r.prov, s.Provider), append(r.upstr, s.UpstreamModel)
	r.prompt, r.completionTokens = append(r.prompt, s.Usage.PromptTokens), append(r.completionTokens, s.Usage.CompletionTokens)
	r.estimated, r.cost = append(r.estimated, s.Usage.Estimated), append(r.cost, s.CostNanoUSD)
	r.at, r.eventID = append(r.at, e.OccurredAt.UTC()), append(r.eventID, [16]byte(e.EventID))
	return nil
}

func (r *ledgerRows) Flush(b *pgx.Batch) {
	if len(r.completion) == 0 {
		return
	}
	b.Queue(r.sql, r.completion, r.account, r.key, r.model, r.prov, r.upstr,
		r.prompt, r.completionTokens, r.estimated, r.cost, r.at, r.eventID)
}

// Row is one group of a usage report.
type Row struct {
	// Group is the model, the key id, the UTC day (YYYY-MM-DD), or "" for
	// the total.
	Group            string
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	CostNanoUSD      int64
}

// Query reports an account's successful completions in [from, to) of the
// live model, grouped by "model", "day", "key", or not at all ("": one
// total row, zero when there was no usage), sorted by Group. Whole UTC days
// are answered from the daily rollups; any other range from the ledger.
func Query(ctx context.Context, q projections.Querier, accountID string, from, to time.Time, groupBy string) ([]Row, error) {
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
			FROM %s WHERE account_id = $1 AND day >= $2::date AND day < $3::date`, group, projections.Table(projections.LiveSchema, "usage_rollups"))
		args = []any{accountID, from.Format(time.DateOnly), to.Format(time.DateOnly)}
	} else {
		sql = fmt.Sprintf(`SELECT %s AS g, count(*), coalesce(sum(prompt_tokens), 0)::bigint,
				coalesce(sum(completion_tokens), 0)::bigint, coalesce(sum(cost_nano_usd), 0)::bigint
			FROM %s WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3`, group, projections.Table(projections.LiveSchema, "usage_ledger"))
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
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var u Row
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
