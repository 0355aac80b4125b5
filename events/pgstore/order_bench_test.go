package pgstore_test

import (
	"context"
	"sync/atomic"
	"testing"
)

// BenchmarkAppendOrderTechniques measures appends (5 events each, 32
// concurrent appenders) under three ways of giving readers a global order
// that never skips a late commit:
//
//   - registered: the store's own (migration 0007) — appenders take a
//     shared advisory lock, readers read below the oldest running one;
//   - exclusive: one append lock held to commit, so positions commit in
//     order and readers follow position alone;
//   - unregistered: no registration (the old text-ordered store's cost,
//     whose readers waited on every transaction of the server).
//
// Run: go test -run '^$' -bench AppendOrderTechniques -benchtime 3000x ./events/pgstore/
func BenchmarkAppendOrderTechniques(b *testing.B) {
	variants := map[string]string{
		"registered": "",
		"exclusive": `CREATE OR REPLACE FUNCTION events_register_appender() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN PERFORM pg_advisory_xact_lock(8390043842688151664); RETURN NULL; END $$`,
		"unregistered": `DROP TRIGGER events_register_appender ON events`,
	}
	for _, name := range []string{"registered", "exclusive", "unregistered"} {
		b.Run(name, func(b *testing.B) {
			s, pool := newStore(b)
			if sql := variants[name]; sql != "" {
				if _, err := pool.Exec(context.Background(), sql); err != nil {
					b.Fatal(err)
				}
			}
			var n atomic.Int64
			b.SetParallelism(16) // 2 cores × 16 = 32 appenders
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					stream, evs, err := completionEvents(n.Add(1))
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := s.Append(ctx, stream, 0, evs...); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// BenchmarkReadHorizon measures what a reader pays for the horizon: the
// store's (this database's appenders, from pg_locks) against the
// server-wide snapshot xmin the old store used.
func BenchmarkReadHorizon(b *testing.B) {
	s, pool := newStore(b)
	ctx := context.Background()
	b.Run("appenders", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Horizon(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("server_xmin", func(b *testing.B) {
		for b.Loop() {
			var x uint64
			if err := pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
