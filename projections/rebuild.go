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

// RebuildConfig tunes a rebuild.
type RebuildConfig struct {
	// Batch is the most events applied per transaction. Required.
	Batch int
	// DeferIndexesAfter is how many events a rebuild applies keeping
	// every index up to date; then it drops the secondary indexes its
	// statements do not read, and builds them once at its end. From a large
	// table a build costs a fraction of keeping the index up row by row,
	// but each flushes its index to disk when it ends: worth it for a large
	// log only. 100,000 when zero.
	DeferIndexesAfter int64
}

// Rebuild is RebuildWith with batch events per transaction.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *pgstore.Store, schema string, batch int,
	build func(schema string) []Projector, logger *slog.Logger) (RebuildStats, error) {
	return RebuildWith(ctx, pool, store, schema, RebuildConfig{Batch: batch}, build, logger)
}

// RebuildWith (re)creates every read-model table in schema, empty and
// shaped like the live one, and applies the whole event log to it in the
// global order, cfg.Batch events per transaction, with the projectors
// build returns for schema: every event committed before it started,
// waiting (up to a minute) for transactions still appending then. The
// live model is not touched, so a rebuild runs beside it; schema must
// therefore not be the live schema.
//
// Reading, decoding and folding a batch (prepare) overlap with writing
// the batch before it, and the first batches are read while the tables
// are made: the database's and this process's cores work at once.
func RebuildWith(ctx context.Context, pool *pgxpool.Pool, store *pgstore.Store, schema string, cfg RebuildConfig,
	build func(schema string) []Projector, logger *slog.Logger) (RebuildStats, error) {
	start := time.Now()
	var stats RebuildStats
	if schema == "" || schema == LiveSchema {
		return stats, fmt.Errorf("rebuild: schema %q: want a schema beside the live one", schema)
	}
	if cfg.Batch <= 0 {
		return stats, fmt.Errorf("rebuild: batch %d: want a positive size", cfg.Batch)
	}
	if cfg.DeferIndexesAfter <= 0 {
		cfg.DeferIndexesAfter = 100_000
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ps, finish := forRebuild(build(schema))
	set, err := NewSet(pool, schema, logger, nil, ps...)
	if err != nil {
		return stats, fmt.Errorf("rebuild: %w", err)
	}
	set.asyncCommit = true

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prepared := set.readPrepared(ctx, store, cfg.Batch)
	if err := CreateReadModels(ctx, pool, schema); err != nil {
		return stats, err
	}
	if stats, finish, err = rebuildFrom(ctx, pool, set, prepared, cfg, finish); err != nil {
		return stats, fmt.Errorf("rebuild %s after %d events: %w", schema, stats.Events, err)
	}
	if err := execAll(ctx, pool, finish); err != nil {
		return stats, fmt.Errorf("rebuild %s: finish: %w", schema, err)
	}
	stats.Elapsed = time.Since(start)
	logger.InfoContext(ctx, "read models rebuilt", "schema", schema, "events", stats.Events,
		"elapsed", stats.Elapsed, "events_per_second", int64(stats.EventsPerSecond()))
	return stats, nil
}

// rebuildFrom writes the prepared batches to set's schema, analyzing its
// tables after the first and dropping its deferred indexes after
// cfg.DeferIndexesAfter events; it returns finish with the statements
// that build those indexes again appended.
func rebuildFrom(ctx context.Context, pool *pgxpool.Pool, set *Set, prepared <-chan preparedPage, cfg RebuildConfig,
	finish []string) (RebuildStats, []string, error) {
	var stats RebuildStats
	analyzed, deferred := false, false
	for p := range prepared {
		if p.err != nil {
			return stats, finish, p.err
		}
		if err := set.commitPrepared(ctx, p.batch, nil); err != nil {
			return stats, finish, err
		}
		stats.Events += int64(len(p.batch.evs))
		stats.Cursor = p.cur
		if !analyzed {
			if err := analyze(ctx, pool, set.schema); err != nil {
				return stats, finish, err
			}
			analyzed = true
		}
		if !deferred && stats.Events >= cfg.DeferIndexesAfter {
			build, err := dropDeferredIndexes(ctx, pool, set.schema)
			if err != nil {
				return stats, finish, err
			}
			finish, deferred = append(finish, build...), true
		}
	}
	return stats, finish, ctx.Err()
}

// forRebuild returns the projectors a rebuild applies the log with (a
// Rebuilding one's ForRebuild), and the statements that complete their
// models after the last batch.
func forRebuild(ps []Projector) ([]Projector, []string) {
	out := make([]Projector, 0, len(ps))
	var finish []string
	for _, p := range ps {
		if r, ok := p.(Rebuilding); ok {
			a, stmts := r.ForRebuild()
			out, finish = append(out, a), append(finish, stmts...)
			continue
		}
		out = append(out, p)
	}
	return out, finish
}

// preparedPage is a batch of a rebuild read and prepared, with the cursor
// after it, or the error that ended the reading.
type preparedPage struct {
	batch *preparedBatch
	cur   pgstore.Cursor
	err   error
}

// readPrepared reads the log from the beginning in batches of batch events
// (every event committed before it started, waiting for transactions
// still appending rather than taking an empty read for the end of the
// log) and prepares each, a batch ahead of the caller, until ctx ends.
func (s *Set) readPrepared(ctx context.Context, store *pgstore.Store, batch int) <-chan preparedPage {
	// A few batches ahead: the first are read and prepared while the
	// tables are made.
	read, out := make(chan preparedPage, 1), make(chan preparedPage, 3)
	send := func(ch chan<- preparedPage, p preparedPage) bool {
		select {
		case ch <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(read)
		if err := store.EnsureStatistics(ctx); err != nil {
			send(read, preparedPage{err: err})
			return
		}
		cfg := pgstore.CatchUpConfig{BatchSize: batch, Wait: rebuildWait, Filter: pgstore.Filter{WithoutMetadata: true}}
		_, err := store.CatchUp(ctx, cfg, func(evs []events.Envelope, next pgstore.Cursor) error {
			if !send(read, preparedPage{batch: &preparedBatch{evs: evs}, cur: next}) {
				return ctx.Err()
			}
			return nil
		})
		if err != nil {
			send(read, preparedPage{err: err})
		}
	}()
	go func() {
		defer close(out)
		for p := range read {
			if p.err == nil {
				p.batch, p.err = s.prepare(p.batch.evs)
			}
			if !send(out, p) || p.err != nil {
				return
			}
		}
	}()
	return out
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
