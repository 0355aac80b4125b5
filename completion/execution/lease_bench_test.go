package execution

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/events"
)

// BenchmarkKeeperShortRun is what lease renewal costs a request shorter
// than a third of the lease (nearly all of them): a goroutine, a timer and
// a context, no database work.
//
//	go test -run '^$' -bench KeeperShortRun -benchmem ./execution/
func BenchmarkKeeperShortRun(b *testing.B) {
	x := &Executor{cfg: Config{Lease: 10 * time.Minute, Now: time.Now, Logger: slog.New(slog.DiscardHandler)}}
	c := completion.Completion{ID: "chatcmpl-bench", Status: completion.StatusRunning, Executor: "api:b"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c.LeaseExpiresAt = time.Now().Add(10 * time.Minute)
		k, _ := x.keep(ctx, events.Metadata{}, c, nil)
		if _, err := k.stop(); err != nil {
			b.Fatal(err)
		}
	}
}
