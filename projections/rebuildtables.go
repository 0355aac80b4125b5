package projections

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CreateReadModels makes schema hold empty copies of the live read-model
// tables, indexes and constraints included.
func CreateReadModels(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return createTables(ctx, tx, schema) }); err != nil {
		return fmt.Errorf("rebuild: create read models in %s: %w", schema, err)
	}
	return nil
}

// createTables (re)creates schema's read-model tables in tx, in one
// round trip.
func createTables(ctx context.Context, tx pgx.Tx, schema string) error {
	// Like a rebuild's batches, not waiting for its commit to be flushed.
	sql := []string{"SET LOCAL synchronous_commit = off", "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize()}
	for _, t := range readModelTables() {
		sql = append(sql, fmt.Sprintf("DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s (LIKE %[2]s INCLUDING ALL)",
			Table(schema, t), Table(LiveSchema, t)))
	}
	// No arguments: one simple-protocol query of many statements.
	_, err := tx.Exec(ctx, strings.Join(sql, ";\n"))
	return err
}

// rebuildKeepsIndexesOf lists the tables whose secondary indexes a
// rebuild never drops, because its statements read them: the window
// prune of the quota state reads quota_windows by account.
var rebuildKeepsIndexesOf = []string{"quota_windows"}

// dropDeferredIndexes drops the secondary indexes of schema's read models
// that a rebuild's statements do not read, and returns the statements
// that build them again.
func dropDeferredIndexes(ctx context.Context, pool *pgxpool.Pool, schema string) ([]string, error) {
	var build []string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT c.relname, format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid)
			FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
			JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = ANY($2) AND NOT i.indisunique ORDER BY 1, 2`, schema, readModelTables())
		if err != nil {
			return err
		}
		var drop []string
		var table, name, def string
		_, err = pgx.ForEachRow(rows, []any{&table, &name, &def}, func() error {
			if !slices.Contains(rebuildKeepsIndexesOf, table) {
				drop, build = append(drop, "DROP INDEX "+name), append(build, def)
			}
			return nil
		})
		if err != nil || len(drop) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, strings.Join(drop, "; "))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("drop indexes of %s: %w", schema, err)
	}
	return build, nil
}

// execAll runs sql's statements in order in one transaction that, like a
// rebuild's batches, does not wait for its commit to be flushed.
func execAll(ctx context.Context, pool *pgxpool.Pool, sql []string) error {
	if len(sql) == 0 {
		return nil
	}
	// No arguments: one simple-protocol query, one implicit transaction.
	if _, err := pool.Exec(ctx, "SET LOCAL synchronous_commit = off;\n"+strings.Join(sql, ";\n")); err != nil {
		return err
	}
	return nil
}

// analyze updates the statistics of schema's read models, so that the
// planner knows their shape (without any, it took the guard's constant
// projection column for a selective one and scanned every row for each
// batch).
func analyze(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	tables := make([]string, 0, len(readModelTables()))
	for _, t := range readModelTables() {
		tables = append(tables, Table(schema, t))
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("rebuild: analyze %s: %w", schema, err)
	}
	return nil
}
