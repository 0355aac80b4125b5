package pgstore

import (
	"context"
	"fmt"
)

// EnsureStatistics analyzes the events table when it has never been
// analyzed (a store just created or loaded, before autovacuum came by).
// Without statistics the planner reads a page of the global order by
// sorting every event after the cursor, not by walking the order's index:
// a reader catching up from the beginning, such as a rebuild, then sorted
// the rest of the log for every page it read.
func (s *Store) EnsureStatistics(ctx context.Context) error {
	has, err := s.hasStatistics(ctx)
	if err != nil || has {
		return err
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE events`); err != nil {
		return fmt.Errorf("analyze events: %w", err)
	}
	return nil
}

// hasStatistics reports whether the planner has statistics of the global
// order's leading column.
func (s *Store) hasStatistics(ctx context.Context) (bool, error) {
	var has bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stats s
		JOIN pg_class c ON c.relname = s.tablename JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
		WHERE c.oid = 'events'::regclass AND s.attname = 'transaction_id')`).Scan(&has)
	if err != nil {
		return false, fmt.Errorf("events statistics: %w", err)
	}
	return has, nil
}
