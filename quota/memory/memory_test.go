package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/memory"
	"github.com/tollgate/tollgate/quota/quotatest"
)

// The in-process limiter keeps the contract.
func TestContract(t *testing.T) {
	t.Parallel()
	quotatest.Run(t, quotatest.Adapter{New: func(t *testing.T, seed quota.Seeder) quota.Limiter { return memory.New(seed) }})
}

// TestMemorySeedsOnceUnderBurst: the first requests of an account, all at
// once, share one seeding (one set of read-model queries), and a seeding
// that fails is tried again by a request that waited for it.
func TestMemorySeedsOnceUnderBurst(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	release := make(chan struct{})
	seed := func(ctx context.Context, id string, now time.Time) (quota.Snapshot, error) {
		n := calls.Add(1)
		<-release
		if n == 1 {
			return quota.Snapshot{}, errors.New("read model unreachable")
		}
		return quota.Snapshot{Budgets: map[string]map[string]quota.Budget{"account": {"day:2026-03-14": {Spent: 7}}}}, nil
	}
	l := memory.New(seed)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := l.Admit(context.Background(), quotatest.Admission(fmt.Sprintf("c%d", i), quotatest.T0))
			errs <- err
		})
	}
	// Wait until the first seeding runs and the others queue behind it.
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d seedings ran at once, want 1", got)
	}
	close(release)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if !errors.Is(err, quota.ErrLimiter) {
				t.Errorf("error %v is not ErrLimiter", err)
			}
		}
	}
	if failed != 1 || calls.Load() != 2 {
		t.Errorf("%d admissions failed and %d seedings ran; want 1 (the failed seeding's own) and 2", failed, calls.Load())
	}
	u, err := l.Peek(context.Background(), "acc_1", "key_1", quotatest.T0)
	if err != nil {
		t.Fatal(err)
	}
	if want := (quota.Budget{Spent: 7, Reserved: money.NanoUSD((n - 1) * 1000)}); u.Account.Day != want {
		t.Errorf("account day budget %+v, want %+v (seeded spend, %d reservations)", u.Account.Day, want, n-1)
	}
}

// TestMemoryExpiresAfterEarliestSettled: expiry keeps only the earliest
// due time; settling that reservation must not keep a later one from
// expiring, nor expire it early.
func TestMemoryExpiresAfterEarliestSettled(t *testing.T) {
	t.Parallel()
	l := memory.New(nil)
	a := quotatest.Admission("a", quotatest.T0)
	a.TTL = time.Minute
	b := quotatest.Admission("b", quotatest.T0)
	b.TTL = 2 * time.Minute
	da := quotatest.MustAdmit(t, l, a)
	quotatest.MustAdmit(t, l, b)
	quotatest.Settle(t, l, a, da, 0, 0, quotatest.T0.Add(time.Second))
	reserved := func(at time.Time) money.NanoUSD {
		t.Helper()
		u, err := l.Peek(context.Background(), "acc_1", "key_1", at)
		if err != nil {
			t.Fatal(err)
		}
		return u.Account.Day.Reserved
	}
	if got := reserved(quotatest.T0.Add(90 * time.Second)); got != 1000 {
		t.Errorf("after a's due time: reserved %d, want b's 1000", got)
	}
	c := quotatest.Admission("c", quotatest.T0.Add(100*time.Second))
	c.TTL = time.Hour
	quotatest.MustAdmit(t, l, c)
	if got := reserved(quotatest.T0.Add(3 * time.Minute)); got != 1000 {
		t.Errorf("after b's due time: reserved %d, want c's 1000", got)
	}
	if got := reserved(quotatest.T0.Add(2 * time.Hour)); got != 0 {
		t.Errorf("after c's due time: reserved %d, want 0", got)
	}
}
