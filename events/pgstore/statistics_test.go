package pgstore_test

import (
	"context"
	"testing"
)

// A store read from the beginning before autovacuum analyzed its events
// (just loaded) is analyzed first; one with statistics is left alone.
func TestEnsureStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	if _, err := pool.Exec(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, data, metadata)
		SELECT gen_random_uuid(), 'apikey-k' || i, 1, 'apikey.revoked', 1, now(), '{}', '{}' FROM generate_series(1, 100) i`); err != nil {
		t.Fatal(err)
	}
	analyzed := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables WHERE relid = 'events'::regclass`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := analyzed()
	for range 2 { // the second finds statistics and analyzes nothing
		if err := s.EnsureStatistics(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var has bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'events' AND attname = 'transaction_id')`).Scan(&has); err != nil || !has {
		t.Fatalf("statistics after EnsureStatistics: %v, %v", has, err)
	}
	if n := analyzed(); n > before+1 {
		t.Errorf("events analyzed %d times; want once", n-before)
	}
}
