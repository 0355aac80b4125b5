package pgstore_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// Of several replicas only one leads at a time; when it stops, another
// takes over.
func TestRunAsLeaderOneAtATime(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	var leading, maxLeading, runs atomic.Int32
	started := make(chan int, 3)
	ctxs := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = pgstore.RunAsLeader(ctx, pool, "test-role", 20*time.Millisecond, nil, func(ctx context.Context) error {
				n := leading.Add(1)
				for {
					m := maxLeading.Load()
					if n <= m || maxLeading.CompareAndSwap(m, n) {
						break
					}
				}
				runs.Add(1)
				started <- i
				<-ctx.Done()
				leading.Add(-1)
				return nil
			})
		}()
	}
	first := <-started
	ctxs[first]() // the leader stops: another must take over
	second := <-started
	if second == first {
		t.Fatalf("replica %d led twice", first)
	}
	ctxs[second]()
	third := <-started
	for _, c := range ctxs {
		c()
	}
	wg.Wait()
	if third == first || third == second {
		t.Fatalf("leaders %d %d %d", first, second, third)
	}
	if m := maxLeading.Load(); m != 1 {
		t.Fatalf("%d replicas led at once", m)
	}
}
