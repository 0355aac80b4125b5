package faults

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// budgetWave sends count concurrent requests, alternating between the two
// instances, and counts their statuses.
func (e *budgetEnv) budgetWave(t *testing.T, key string, count int, seed uint64) map[int]int {
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < count; i++ {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		n := []int{2, 4, 8}[i%3]
		maxTokens := int64(20 + r.IntN(40))
		if i%5 == 0 {
			maxTokens = 0 // the model's cap (200) per choice
		}
		body := budgetBody(r, n, maxTokens)
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, resp, err := e.do(i%2, "POST", "/v1/chat/completions", key, body)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			switch status {
			case http.StatusOK, http.StatusTooManyRequests, http.StatusServiceUnavailable:
			default:
				t.Errorf("request %d: status %d: %s", i, status, resp)
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses
}

// waitLimiter waits up to 10 s for the limiter to agree with the ledger
// (settlements still being retried land within seconds of a resume) and
// returns the account's spent and reserved of the day.
func (e *budgetEnv) waitLimiter(t *testing.T, accountID string) (spent, reserved int64) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := e.limiter.Peek(context.Background(), accountID, "", e.clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		spent, reserved = int64(u.Account.Day.Spent), int64(u.Account.Day.Reserved)
		if (spent == e.ledger.Load() && reserved == 0) || time.Now().After(deadline) {
			return spent, reserved
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBudgetHoldsWithCJKAndNAcrossARedisPause: two API instances share one
// Redis; hundreds of concurrent CJK requests with n > 1 (and tools) spend
// a tiny daily budget against a provider that bills honestly; Redis is
// paused for 3.5 s while the first wave's completions settle, and the
// clock then passes the reservations' TTL. Spend must stay within the
// budget plus one reservation, and the limiter must agree with the ledger.
//
// It runs before the package's parallel tests, not beside them: beside the
// kill -9 and outage scenarios the limiter once counted spend twice after
// the pause (spent 16.8 M nano-USD against a ledger of 9.6 M); that is an
// open finding (see README, "Budgets and their guarantee"), not a reason to
// accept the disagreement.
func TestBudgetHoldsWithCJKAndNAcrossARedisPause(t *testing.T) {
	for _, c := range []struct {
		name       string
		maxRetries int
	}{{"go-redis retries (default)", 0}, {"no client retries", -1}} {
		// One after the other: each sends hundreds of requests at once.
		t.Run(c.name, func(t *testing.T) { budgetScenario(t, c.maxRetries) })
	}
}

func budgetScenario(t *testing.T, maxRetries int) {
	const budgetUSD = "0.01"
	const budget = 10_000_000 // nano-USD
	e := budgetStartEnv(t, budgetUSD, maxRetries)
	accountID, key := e.account(t)
	start := time.Now()

	// Wave 1: the admitted requests are still at the provider when Redis
	// stops, so their settlements meet a paused Redis.
	e.provider.delay.Store(int64(700 * time.Millisecond))
	var wave1 map[int]int
	done := make(chan struct{})
	go func() { defer close(done); wave1 = e.budgetWave(t, key, 200, 1) }()
	for wait := time.Now().Add(20 * time.Second); e.provider.received.Load() < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(wait) {
			t.Fatalf("the provider got %d requests in 20 s", e.provider.received.Load())
		}
	}
	e.paused.Store(true)
	e.redis.Pause()
	time.Sleep(3500 * time.Millisecond)
	e.redis.Resume()
	e.paused.Store(false)
	<-done
	settledWave1, ledgerWave1 := e.settled.Load(), e.ledger.Load()

	// Once the settlements that met the pause land, the limiter agrees
	// with the ledger: nothing forgotten, no stale reservation held (an
	// admission that timed out during the pause may still run in Redis
	// after it: it must be released too).
	pauseSpent, pauseReserved := e.waitLimiter(t, accountID)

	// The clock passes the reservation TTL (15 min): a settlement that
	// never reached the limiter is then forgotten there.
	e.clk.Add(16 * time.Minute)
	e.provider.delay.Store(int64(50 * time.Millisecond))
	wave2 := e.budgetWave(t, key, 300, 2)
	spent, reserved := e.waitLimiter(t, accountID)

	billed, err := e.price.Cost(e.provider.prompt.Load(), e.provider.completion.Load())
	if err != nil {
		t.Fatal(err)
	}
	one := e.maxReserved.Load()
	t.Logf("wave 1 (Redis paused 3.5 s): %v, %d outcomes settled; after it the limiter had spent %d, reserved %d (ledger %d); wave 2: %v",
		wave1, settledWave1, pauseSpent, pauseReserved, ledgerWave1, wave2)
	t.Logf("provider billed %d nano-USD = %.2f× the budget %d (largest reservation %d, budget + one = %d); ledger %d",
		int64(billed), float64(billed)/budget, budget, one, budget+one, e.ledger.Load())
	t.Logf("limiter: spent %d, reserved %d (ledger %d); settlements: %d, %d begun while Redis was stopped, %d failed at first and were retried, %d never reached the limiter; took %s",
		spent, reserved, e.ledger.Load(), e.settled.Load(), e.duringPause.Load(), e.retriedSettlements.Load(), e.lostSettlements.Load(),
		time.Since(start).Round(time.Millisecond))
	if int64(billed) != e.ledger.Load() {
		t.Errorf("the provider billed %d, the ledger recorded %d", int64(billed), e.ledger.Load())
	}
	if int64(billed) > budget+one {
		t.Errorf("spend %d passed the budget %d by more than one reservation (%d): %.2f×", int64(billed), budget, one, float64(billed)/budget)
	}
	if pauseSpent != ledgerWave1 || pauseReserved != 0 {
		t.Errorf("after the pause the limiter disagrees with the ledger: spent %d reserved %d, ledger %d", pauseSpent, pauseReserved, ledgerWave1)
	}
	if spent != e.ledger.Load() || reserved != 0 {
		t.Errorf("the limiter disagrees with the ledger: spent %d reserved %d, ledger %d", spent, reserved, e.ledger.Load())
	}
	if wave1[http.StatusOK] == 0 || wave2[http.StatusTooManyRequests] == 0 {
		t.Errorf("want admissions in wave 1 and budget refusals in wave 2: %v %v", wave1, wave2)
	}
	if e.duringPause.Load() == 0 {
		t.Errorf("no settlement met the paused Redis: the scenario did not happen")
	}
	if lost := e.lostSettlements.Load(); lost != 0 {
		t.Errorf("%d settlements never reached the limiter", lost)
	}
}
