package projections_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/projections/projectionstest"
	quotastate "github.com/tollgate/tollgate/quota/state"
	"github.com/tollgate/tollgate/usage"
)

// buildReadModels returns every read model's projector, as the server
// wires them (server.ReadModels, with hourly billing windows in tokens).
func buildReadModels(schema string) []projections.Projector {
	ps := []projections.Projector{usage.New(schema), jobs.New(schema)}
	ps = append(ps, records.Projectors(schema, time.Hour, billing.UnitTokens)...)
	return append(ps, quotastate.New(schema))
}

// BenchmarkRebuildReadModels measures what `tollgate project rebuild`
// does: every read model rebuilt, in batches of 5000 (its default), from a
// log of 4000 completions served as the API records them (five events
// each, 20000 events), 20 s apart, of 50 accounts.
func BenchmarkRebuildReadModels(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	l := newLog(b, pool)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 4000 {
		projectionstest.NewServed(rng, fmt.Sprintf("c%d", i), 50, day0.Add(time.Duration(i)*20*time.Second)).Append(l)
	}
	l.Stored()
	l.All = nil
	benchRebuild(b, pool, l, 5000, buildReadModels)
}

// benchRebuild rebuilds l's log into schema "rebuild" in batches of batch
// events per iteration and reports the rate.
func benchRebuild(b *testing.B, pool *pgxpool.Pool, l *evlog, batch int, build func(string) []projections.Projector) {
	var n int64
	var elapsed time.Duration
	for b.Loop() {
		stats, err := projections.Rebuild(context.Background(), pool, l.Store, "rebuild", batch, build, nil)
		if err != nil {
			b.Fatal(err)
		}
		n += stats.Events
		elapsed += stats.Elapsed
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
}

// BenchmarkBatch measures the live projector's unit of work: one
// transaction applying a batch of served completions' events (five each)
// to every read model of the live schema, as the follower does under load.
func BenchmarkBatch(b *testing.B) {
	for _, completions := range []int{20, 200} {
		b.Run(fmt.Sprintf("events=%d", 5*completions), func(b *testing.B) {
			ctx := context.Background()
			pool, _ := pgtest.NewPool(b)
			set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, buildReadModels(projections.LiveSchema)...)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			at := day0
			var pos int64
			batch := func() []events.Envelope {
				var evs []events.Envelope
				for range completions {
					pos += 5
					at = at.Add(10 * time.Millisecond)
					es, err := projectionstest.NewServed(rng, fmt.Sprintf("c%d", pos), 50, at).Envelopes(pos)
					if err != nil {
						b.Fatal(err)
					}
					evs = append(evs, es...)
				}
				return evs
			}
			var n int
			for b.Loop() {
				b.StopTimer()
				evs := batch()
				b.StartTimer()
				if err := set.HandleBatch(ctx, evs); err != nil {
					b.Fatal(err)
				}
				n += len(evs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}
