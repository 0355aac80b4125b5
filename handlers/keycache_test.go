package handlers

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyCacheSharesLookups: concurrent misses of one key run one lookup
// and all get its result; a caller whose context ends stops waiting
// without cancelling the lookup the others wait for.
func TestKeyCacheSharesLookups(t *testing.T) {
	t.Parallel()
	c := &keyCache{ttl: time.Second, entries: map[string]keyEntry{}}
	var calls atomic.Int32
	release := make(chan struct{})
	lookup := func(ctx context.Context) (principal, error) {
		calls.Add(1)
		<-release
		if err := ctx.Err(); err != nil {
			return principal{}, err
		}
		return principal{KeyID: "key_1", AccountID: "acc_1"}, nil
	}
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	const n = 50
	results := make(chan principal, n)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = c.load(leaderCtx, "h", lookup) // the leader's client goes away mid-lookup
	})
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for range n {
		wg.Go(func() {
			p, err := c.load(context.Background(), "h", lookup)
			if err != nil {
				t.Errorf("load: %v", err)
			}
			results <- p
		})
	}
	cancelLeader()
	// The lookup ends once every waiter joined the flight.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		joined := c.flights["h"].waiters
		c.mu.Unlock()
		if joined == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiters joined the flight", joined, n)
		}
	}
	close(release)
	wg.Wait()
	close(results)
	for p := range results {
		if p.KeyID != "key_1" {
			t.Errorf("got %+v, want key_1", p)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d lookups for %d concurrent misses, want 1", got, n+1)
	}

	// A waiter whose own context ends gets its context's error.
	release2 := make(chan struct{})
	defer close(release2)
	go func() {
		_, _ = c.load(context.Background(), "h2", func(context.Context) (principal, error) { <-release2; return principal{}, nil })
	}()
	for {
		c.mu.Lock()
		_, busy := c.flights["h2"]
		c.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.load(ctx, "h2", lookup); !errors.Is(err, context.Canceled) {
		t.Errorf("waiter with a cancelled context: %v, want context.Canceled", err)
	}
}
