package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// BenchmarkAppend measures Append of one completion's 5 events to a new
// stream at expected version 0 (the sync path's one append), on a pool of
// 20 connections (the server's default), reporting the CPU time of the
// benchmark's process and of the database's backends per append: one
// appender at a time
// (serial: the latency of a lone append), and 32 concurrent appenders
// (parallel: throughput, where group commit shares statements and
// commits); each with group commit (commit=group, the default) and
// without (commit=alone), interleaved so that both see the same load.
//
// Run: go test -run '^$' -bench '^BenchmarkAppend$' -count 5 ./events/pgstore/ | tee out.txt
// and compare: benchstat -col /commit out.txt
func BenchmarkAppend(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		name := map[bool]string{false: "serial", true: "parallel"}[parallel]
		for _, commit := range benchCommits {
			b.Run(name+"/commit="+commit.name, func(b *testing.B) {
				reg := prometheus.NewRegistry()
				s := benchStore(b, reg, commit.cfg)
				cpu := pgtest.StartCPU(b, s.Pool())
				benchAppend(b, s, parallel)
				cpu.Report(b, "go")
				if n, sum := groupSizes(b, reg); n > 0 {
					b.ReportMetric(sum/n, "appends/group")
				}
			})
		}
	}
}

var benchCommits = []struct {
	name string
	cfg  pgstore.GroupCommitConfig
}{
	{"alone", pgstore.GroupCommitConfig{Disabled: true}},
	{"group", pgstore.GroupCommitConfig{}},
	{"group1", pgstore.GroupCommitConfig{MaxInFlight: 1}},
	{"group4", pgstore.GroupCommitConfig{MaxInFlight: 4}},
}

// benchAppend appends b.N completions to s, from one goroutine or 32.
func benchAppend(b *testing.B, s *pgstore.Store, parallel bool) {
	var n atomic.Int64
	appendOne := func(ctx context.Context) error {
		stream, evs, err := completionEvents(n.Add(1))
		if err != nil {
			return err
		}
		_, err = s.Append(ctx, stream, 0, evs...)
		return err
	}
	b.ResetTimer()
	if parallel {
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
}

// completionEvents returns the stream of the i-th completion of a
// benchmark and 5 events for it.
func completionEvents(i int64) (string, []events.Envelope, error) {
	stream := fmt.Sprintf("completion-b%d", i)
	evs := make([]events.Envelope, 5)
	for j := range evs {
		e, err := events.New(stream, events.APIKeyRevoked{KeyID: "key", AccountID: "acc"},
			events.Metadata{AccountID: "acc"}, t0, fmt.Sprintf("%d-%d", i, j))
		if err != nil {
			return "", nil, err
		}
		evs[j] = e
	}
	return stream, evs, nil
}

// benchStore returns a store configured with gc on a fresh database
// through a pool of 20 connections.
func benchStore(b *testing.B, reg prometheus.Registerer, gc pgstore.GroupCommitConfig) *pgstore.Store {
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
	// Open every connection now, so that none starts (and counts) during the run.
	conns := make([]*pgxpool.Conn, cfg.MaxConns)
	for i := range conns {
		if conns[i], err = pool.Acquire(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Release()
	}
	s, err := pgstore.NewWithConfig(pool, pgstore.Config{Registerer: reg, GroupCommit: gc})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// groupSizes returns the count and sum of the group size histogram.
func groupSizes(t testing.TB, reg *prometheus.Registry) (count, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tollgate_eventstore_append_group_size" {
			h := mf.GetMetric()[0].GetHistogram()
			return float64(h.GetSampleCount()), h.GetSampleSum()
		}
	}
	return 0, 0
}
