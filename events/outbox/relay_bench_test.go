package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// benchCompletions is how many completions one relay batch carries: five
// events each, DefaultBatchSize events in all.
const benchCompletions = outbox.DefaultBatchSize / 5

// BenchmarkRelayBatch measures one relay batch: DefaultBatchSize events
// (100 completions, ten of them queued jobs) read after a fresh checkpoint
// and published, to a bus that drops them (the relay's own CPU) or to the
// PostgreSQL bus (watermill-sql, its inserts included); publish=all sends
// every event to bus.Topic and the jobs to bus.JobsTopic, publish=routes
// only the jobs (TOLLGATE_BUS_PUBLISH=routes, the PostgreSQL bus's
// default), reading only the event types a job can be. Besides the wall
// time (which includes PostgreSQL's, the relay waiting on it), it reports
// the CPU time of the relay's process and of the database's backends.
//
// Run: go test -run '^$' -bench RelayBatch -benchtime 200x -count 6 ./events/outbox | tee new.txt; benchstat old.txt new.txt
func BenchmarkRelayBatch(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	s, err := pgstore.New(pool, nil)
	if err != nil {
		b.Fatal(err)
	}
	appendCompletions(b, s, benchCompletions)
	stored(b, s, 5*benchCompletions)
	sqlPub, err := bus.NewPublisher(bus.Config{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sqlPub.Close() })
	seq := 0 // each relay a checkpoint of its own, from the beginning
	for _, mode := range []struct {
		name       string
		routesOnly bool
		read       int // events RunOnce reads
	}{{"all", false, 5 * benchCompletions}, {"routes", true, benchCompletions}} {
		for _, pub := range []struct {
			name string
			pub  message.Publisher
		}{{"discard", discard{}}, {"postgresql", sqlPub}} {
			b.Run("publish="+mode.name+"/bus="+pub.name, func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				cpu := pgtest.StartCPU(b, pool)
				for b.Loop() {
					seq++
					relay, err := outbox.NewRelay(outbox.RelayConfig{
						Store: s, Publisher: bus.EventPublisher{Publisher: pub.pub}, Topic: bus.Topic,
						Name:       fmt.Sprintf("bench-%d", seq),
						Routes:     []outbox.Route{{Topic: bus.JobsTopic, Match: bus.IsJob, Types: bus.JobTypes()}},
						RoutesOnly: mode.routesOnly,
					})
					if err != nil {
						b.Fatal(err)
					}
					if n, err := relay.RunOnce(ctx); err != nil || n != mode.read {
						b.Fatalf("read %d, %v; want %d", n, err, mode.read)
					}
				}
				cpu.Report(b, "relay")
			})
		}
	}
}
