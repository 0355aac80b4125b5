package projections_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/projections"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections/projectionstest"
)

func TestLiveEqualsRebuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	rng := rand.New(rand.NewPCG(7, 11))
	bus := projectionstest.NewBus(t, newSet(t, pool, projections.LiveSchema), rng)

	accounts := []string{"acc_1", "acc_2", "acc_3", "acc_4", "acc_5"}
	models := []string{"small", "large", "mini"}
	for _, a := range accounts {
		l.Append(events.StreamAccount+a, a, day0, events.AccountCreated{AccountID: a, Name: a, Email: a + "@x", Plan: "pro"})
		for k := range 2 {
			key := fmt.Sprintf("key_%s_%d", a, k)
			l.Append(events.StreamAPIKey+key, a, day0, events.APIKeyIssued{KeyID: key, AccountID: a, Name: key, KeyHash: key, KeyPrefix: "tg_"})
		}
	}
	seq := 0
	for day := range 3 {
		// Completions of the day, their lifecycle steps interleaved.
		seq = l.Day(rng, seq, day0.Add(time.Duration(day)*24*time.Hour), accounts, models, 60)
		bus.Deliver(l.Stored())
	}

	// The scenario did exercise what it is meant to.
	// (The billing records' part of this scenario is billing/records'
	// TestLiveEqualsRebuild.)
	var failed, queued int
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM jobs WHERE status = 'failed'),
		(SELECT count(*) FROM jobs WHERE status = 'queued')`).Scan(&failed, &queued); err != nil {
		t.Fatal(err)
	}
	if failed == 0 || queued == 0 {
		t.Fatalf("scenario too tame: %d failed, %d queued", failed, queued)
	}

	// Twice: the second replaces the first, in batches that cut streams,
	// with its indexes deferred after the first batch.
	for _, batch := range []int{1000, 7} {
		cfg := projections.RebuildConfig{Batch: batch, DeferIndexesAfter: int64(batch)}
		stats, err := projections.RebuildWith(ctx, pool, l.Store, "rebuild", cfg, buildAll, nil)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Events != int64(len(l.All)) || stats.Cursor.Position != l.All[len(l.All)-1].Position {
			t.Errorf("rebuild read %d events up to %d; want %d up to %d", stats.Events, stats.Cursor.Position, len(l.All), l.All[len(l.All)-1].Position)
		}
		diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, "rebuild")
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) != 0 {
			t.Errorf("live and rebuild (batch %d) differ:\n%s", batch, strings.Join(diffs, "\n"))
		}
	}
	t.Logf("%d events: %d failed, %d queued", len(l.All), failed, queued)

	// The indexes a rebuild drops while it applies the log are there at
	// its end: its tables are as CreateReadModels makes them.
	if err := projections.CreateReadModels(ctx, pool, "shape"); err != nil {
		t.Fatal(err)
	}
	if got, want := indexes(t, pool, "rebuild"), indexes(t, pool, "shape"); !reflect.DeepEqual(got, want) || len(want) < 20 {
		t.Errorf("rebuild's indexes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Compare does see a difference.
	if _, err := pool.Exec(ctx, `UPDATE rebuild.jobs SET status = 'lost' WHERE completion_id = 'c1'`); err != nil {
		t.Fatal(err)
	}
	diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, "rebuild")
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 2 || !strings.HasPrefix(diffs[0], "jobs: 1 rows in public not in rebuild") || !strings.Contains(diffs[1], "lost") {
		t.Errorf("diffs = %q; want the changed job both ways", diffs)
	}
	if _, err := projections.Rebuild(ctx, pool, l.Store, projections.LiveSchema, 100, buildAll, nil); err == nil {
		t.Error("rebuild into the live schema: no error")
	}
}

// indexes returns the definitions of the indexes of schema's tables,
// without the schema's name.
func indexes(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT replace(pg_get_indexdef(indexrelid), $1 || '.', '')
		FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return defs
}

// BenchmarkRebuild measures a rebuild of a log of 5000 completions (about
// 15000 events) in batches of 1000.
func BenchmarkRebuild(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	l := newLog(b, pool)
	appendCompletions(b, l, pool, 5000)
	benchRebuild(b, pool, l, 1000, buildAll)
}

func appendCompletions(b *testing.B, l *evlog, _ *pgxpool.Pool, n int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		a := fmt.Sprintf("acc_%d", rng.IntN(50))
		key, model := a+"_key", []string{"small", "large"}[rng.IntN(2)]
		at := day0.Add(time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		id := fmt.Sprintf("c%d", i)
		if i%10 == 0 {
			l.Requested(id, a, key, model, at)
			l.Failed(id, a, key, model, at.Add(time.Second))
			continue
		}
		prompt, completion := rng.Int64N(2000), rng.Int64N(500)
		l.Append(events.StreamCompletion+id, a, at,
			events.CompletionRequested{CompletionID: id, AccountID: a, KeyID: key, Model: model, Mode: events.ModeSync, Request: []byte(`{}`)},
			events.CompletionStarted{CompletionID: id, Executor: "api:bench", LeaseExpiresAt: at.Add(time.Minute)},
			events.CompletionSucceeded{CompletionID: id, AccountID: a, KeyID: key, Model: model, Provider: "echo", UpstreamModel: model,
				Usage:       events.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
				CostNanoUSD: rng.Int64N(1_000_000), Response: []byte(`{"id":"x","choices":[{"message":{"content":"hello"}}]}`)})
	}
	l.Stored() // every event readable before the clock starts
	l.All = nil
}
