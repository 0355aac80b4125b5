package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// BenchmarkAppend measures Append of one completion's 5 events to a new
// stream at expected version 0 (the sync path's one append), on a pool of
// 20 connections (the server's default): one appender at a time
// (serial: the latency of a lone append), and 32 concurrent appenders
// (parallel: throughput, where group commit shares statements and
// commits).
//
// Run: go test -run '^$' -bench '^BenchmarkAppend$' -count 5 ./events/pgstore/
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel bool
	}{{"serial", false}, {"parallel", true}} {
		b.Run(bc.name, func(b *testing.B) {
			s := benchStore(b)
			var n atomic.Int64
			appendOne := func(ctx context.Context) error {
				i := n.Add(1)
				stream := fmt.Sprintf("completion-b%d", i)
				evs := make([]events.Envelope, 5)
				for j := range evs {
					e, err := events.New(stream, events.APIKeyRevoked{KeyID: "key", AccountID: "acc"},
						events.Metadata{AccountID: "acc"}, t0, fmt.Sprintf("%d-%d", i, j))
					if err != nil {
						return err
					}
					evs[j] = e
				}
				_, err := s.Append(ctx, stream, 0, evs...)
				return err
			}
			b.ResetTimer()
			if bc.parallel {
				b.SetParallelism(16) // 2 cores × 16 = 32 appenders
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := appendOne(context.Background()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for b.Loop() {
					if err := appendOne(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// benchStore returns a store on a fresh database through a pool of 20
// connections.
func benchStore(b *testing.B) *pgstore.Store {
	b.Helper()
	_, dsn := pgtest.NewPool(b)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	s, err := pgstore.New(pool, nil)
	if err != nil {
		b.Fatal(err)
	}
	return s
}
