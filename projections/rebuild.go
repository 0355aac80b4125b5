package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// RebuildStats says what a rebuild did.
type RebuildStats struct {
	// Events is the number of events read and applied.
	Events int64
	// Elapsed is the rebuild's duration, table creation included.
	Elapsed time.Duration
	// Cursor is where the rebuild stopped in the global order: a caller
	// swapping the rebuild in follows the log on from there.
	Cursor pgstore.Cursor
}

// EventsPerSecond is the rebuild's throughput.
func (s RebuildStats) EventsPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Events) / s.Elapsed.Seconds()
}

// rebuildWait is how long a rebuild waits for transactions that were
// appending events when it started.
const rebuildWait = time.Minute

// Rebuild (re)creates every read-model table in schema, empty and shaped
// like the live one, and applies the whole event log to it in the global
// order, batch events per transaction, with the projectors build returns
// for schema: every event committed before it started, waiting (up to a
// minute) for transactions still appending then. The live model is not
// touched, so a rebuild runs beside it; schema must therefore not be the
// live schema.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *pgstore.Store, schema string, batch int,
	build func(schema string) []Projector, logger *slog.Logger) (RebuildStats, error) {
	start := time.Now()
	wait := rebuildWait
	var stats RebuildStats
	if schema == "" || schema == LiveSchema {
		return stats, fmt.Errorf("rebuild: schema %q: want a schema beside the live one", schema)
	}
	if batch <= 0 {
		return stats, fmt.Errorf("rebuild: batch %d: want a positive size", batch)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := CreateReadModels(ctx, pool, schema); err != nil {
		return stats, err
	}
	set, err := NewSet(pool, schema, logger, nil, build(schema)...)
	if err != nil {
		return stats, fmt.Errorf("rebuild: %w", err)
	}
	set.asyncCommit = true

	// Read the next batch while the current one is applied: the reads and
	// the writes then use both the database's and this process's cores.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type page struct {
		evs []events.Envelope
		cur pgstore.Cursor
		err error
	}
	pages := make(chan page, 2)
	go func() {
		defer close(pages)
		// Everything committed before the rebuild started, waiting for
		// transactions still appending rather than taking an empty read
		// for the end of the log.
		_, err := store.CatchUp(ctx, pgstore.CatchUpConfig{BatchSize: batch, Wait: wait}, func(evs []events.Envelope, next pgstore.Cursor) error {
			select {
			case pages <- page{evs: evs, cur: next}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			select {
			case pages <- page{err: err}:
			case <-ctx.Done():
			}
		}
	}()
	for p := range pages {
		if p.err != nil {
			return stats, fmt.Errorf("rebuild %s: %w", schema, p.err)
		}
		if err := set.HandleBatch(ctx, p.evs); err != nil {
			return stats, fmt.Errorf("rebuild %s after %d events: %w", schema, stats.Events, err)
		}
		stats.Events += int64(len(p.evs))
		stats.Cursor = p.cur
	}
	if err := ctx.Err(); err != nil {
		return stats, fmt.Errorf("rebuild %s: %w", schema, err)
	}
	stats.Elapsed = time.Since(start)
	logger.InfoContext(ctx, "read models rebuilt", "schema", schema, "events", stats.Events,
		"elapsed", stats.Elapsed, "events_per_second", int64(stats.EventsPerSecond()))
	return stats, nil
}

// CreateReadModels makes schema hold empty copies of the live read-model
// tables, indexes and constraints included.
func CreateReadModels(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return err
		}
		for _, t := range readModelTables() {
			sql := fmt.Sprintf("DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s (LIKE %[2]s INCLUDING ALL)",
				Table(schema, t), Table(LiveSchema, t))
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("table %s: %w", t, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild: create read models in %s: %w", schema, err)
	}
	return nil
}

// Dump returns every read-model table of schema as text rows (each row
// as PostgreSQL prints it), sorted: what tests compare row for row.
func Dump(ctx context.Context, q Querier, schema string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, t := range readModelTables() {
		rows, err := q.Query(ctx, fmt.Sprintf(`SELECT x::text FROM %s x`, Table(schema, t)))
		if err != nil {
			return nil, fmt.Errorf("dump %s: %w", t, err)
		}
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("dump %s: %w", t, err)
		}
		if len(vals) > 0 {
			sort.Strings(vals)
			out[t] = vals
		}
	}
	return out, nil
}

// Compare returns the differences between the read models of schemaA and
// schemaB, one line per table and direction, with a few of the differing
// rows; none when they hold the same rows.
func Compare(ctx context.Context, pool *pgxpool.Pool, schemaA, schemaB string) ([]string, error) {
	if schemaA == schemaB {
		return nil, errors.New("compare: the same schema twice")
	}
	const examples = 3
	var diffs []string
	for _, t := range readModelTables() {
		for _, dir := range [][2]string{{schemaA, schemaB}, {schemaB, schemaA}} {
			var n int64
			var rows []string
			err := pool.QueryRow(ctx, fmt.Sprintf(`
				WITH d AS (SELECT * FROM %s EXCEPT SELECT * FROM %s)
				SELECT (SELECT count(*) FROM d),
				       coalesce((SELECT array_agg(r) FROM (SELECT d::text AS r FROM d ORDER BY 1 LIMIT %d) x), '{}')`,
				Table(dir[0], t), Table(dir[1], t), examples)).Scan(&n, &rows)
			if err != nil {
				return nil, fmt.Errorf("compare %s: %w", t, err)
			}
			if n > 0 {
				diffs = append(diffs, fmt.Sprintf("%s: %d rows in %s not in %s, e.g. %s",
					t, n, dir[0], dir[1], strings.Join(rows, " ")))
			}
		}
	}
	return diffs, nil
}
