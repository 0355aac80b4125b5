// Package quotatest is the contract every quota.Limiter passes: each
// adapter's own test calls Run with a constructor, so the in-process and
// the Redis limiter are held to the same decisions.
package quotatest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
)

// Adapter is one Limiter implementation under test.
type Adapter struct {
	// New returns a limiter of the test's own, seeded by seed (may be nil).
	New func(t *testing.T, seed quota.Seeder) quota.Limiter
	// Flush loses the state of the limiter New returned last, as a Redis
	// flush does; nil for an adapter whose state lives and dies with it.
	Flush func(t *testing.T)
}

// Run runs the whole contract against ad.
func Run(t *testing.T, ad Adapter) {
	t.Run("limits", func(t *testing.T) { limits(t, ad) })
	t.Run("settlement", func(t *testing.T) { settlement(t, ad) })
	t.Run("check", func(t *testing.T) { check(t, ad) })
	t.Run("extend", func(t *testing.T) { extend(t, ad) })
}

// T0 is the contract's clock: a Saturday afternoon, mid-month.
var T0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// Admission is an admission of acc_1's key_1, unlimited, reserving 100
// tokens and 1000 nano-USD for 15 minutes.
func Admission(id string, now time.Time) quota.Admission {
	return quota.Admission{ID: id, AccountID: "acc_1", KeyID: "key_1", Account: quota.Unlimited(), Key: quota.Unlimited(),
		Tokens: 100, Cost: 1000, Now: now, TTL: 15 * time.Minute}
}

// MustAdmit admits a, failing the test on an error.
func MustAdmit(t *testing.T, l quota.Limiter, a quota.Admission) quota.Decision {
	t.Helper()
	d, err := l.Admit(context.Background(), a)
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	return d
}

// Settle settles a (admitted with d) at cost and tokens, with a five
// minutes' runaway guard, failing the test on an error.
func Settle(t *testing.T, l quota.Limiter, a quota.Admission, d quota.Decision, cost money.NanoUSD, tokens int64, now time.Time) quota.SettleResult {
	t.Helper()
	r, err := l.Settle(context.Background(), quota.Settlement{ID: a.ID, AccountID: a.AccountID, KeyID: a.KeyID,
		Reserved: a.Cost, ReservedTokens: a.Tokens, At: a.Now, Day: d.Day, Month: d.Month, Cost: cost, Tokens: tokens, Now: now,
		GuardWindow: 5 * time.Minute})
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	return r
}

// limits: rate windows, budgets, expiry, the runaway guard's sums,
// concurrency and reseeding.
func limits(t *testing.T, ad Adapter) {
	rates(t, ad)
	budgets(t, ad)
	sharing(t, ad)
}

// rates: the request and token windows.
func rates(t *testing.T, ad Adapter) {
	t.Run("requests count down and reset as the window slides", func(t *testing.T) {
		l := ad.New(t, nil)
		now := T0.Add(500 * time.Millisecond)
		for i := int64(1); i <= 3; i++ {
			a := Admission("c"+string(rune('0'+i)), now)
			a.Key.RequestsPerMinute = 3
			d := MustAdmit(t, l, a)
			if !d.Allowed || d.Requests.Limit != 3 || d.Requests.Remaining != 3-i || d.Requests.Reset != 59500*time.Millisecond {
				t.Fatalf("request %d: %+v", i, d)
			}
		}
		a := Admission("c4", now.Add(10*time.Second))
		a.Key.RequestsPerMinute = 3
		d := MustAdmit(t, l, a)
		if d.Allowed || d.Reason != quota.KeyRequestsPerMinute || d.RetryAfter != 49500*time.Millisecond || d.Requests.Remaining != 0 || d.Requests.Reset != 49500*time.Millisecond {
			t.Fatalf("4th: %+v", d)
		}
		// One millisecond before the first second leaves the window: still full.
		a.Now = T0.Add(60*time.Second - time.Millisecond)
		if d := MustAdmit(t, l, a); d.Allowed || d.RetryAfter != time.Millisecond {
			t.Fatalf("just before the slide: %+v", d)
		}
		a.Now = T0.Add(60 * time.Second)
		if d := MustAdmit(t, l, a); !d.Allowed || d.Requests.Remaining != 2 {
			t.Fatalf("after the slide: %+v", d)
		}
	})
	t.Run("tokens per minute on the account; settlement corrects to real tokens", func(t *testing.T) {
		l := ad.New(t, nil)
		a := Admission("t1", T0)
		a.Account.TokensPerMinute, a.Tokens = 1000, 800
		d := MustAdmit(t, l, a)
		if !d.Allowed || d.Tokens.Remaining != 200 || d.Tokens.Limit != 1000 {
			t.Fatalf("first: %+v", d)
		}
		b := Admission("t2", T0.Add(time.Second))
		b.Account.TokensPerMinute, b.Tokens = 1000, 300
		if d := MustAdmit(t, l, b); d.Allowed || d.Reason != quota.AccountTokensPerMinute || d.RetryAfter != 59*time.Second {
			t.Fatalf("second: %+v", d)
		}
		Settle(t, l, a, d, 10, 100, T0.Add(2*time.Second))
		if d := MustAdmit(t, l, b); !d.Allowed || d.Tokens.Remaining != 600 {
			t.Fatalf("after settling 100 real tokens: %+v", d)
		}
	})
}

// budgets: reservations, settlement, expiry and the runaway guard's sums.
func budgets(t *testing.T, ad Adapter) {
	t.Run("budget reserves worst case, settles real cost, releases on failure", func(t *testing.T) {
		l := ad.New(t, nil)
		mk := func(id string) quota.Admission {
			a := Admission(id, T0)
			a.Account.DailyBudget, a.Cost = 2500, 1000
			return a
		}
		a1, a2, a3 := mk("b1"), mk("b2"), mk("b3")
		d1, d2 := MustAdmit(t, l, a1), MustAdmit(t, l, a2)
		if !d1.Allowed || !d2.Allowed {
			t.Fatal("first two must fit")
		}
		if d := MustAdmit(t, l, a3); d.Allowed || d.Reason != quota.AccountDailyBudget || d.RetryAfter != T0.Truncate(24*time.Hour).Add(24*time.Hour).Sub(T0) {
			t.Fatalf("third: %+v", d)
		}
		Settle(t, l, a1, d1, 200, 10, T0) // spent 200, reserved 1000
		Settle(t, l, a2, d2, 0, 0, T0)    // released: reserved 0
		if d := MustAdmit(t, l, a3); !d.Allowed {
			t.Fatalf("after settle: %+v", d)
		}
		u, err := l.Peek(context.Background(), "acc_1", "key_1", T0)
		if err != nil {
			t.Fatal(err)
		}
		if u.Account.Day.Spent != 200 || u.Account.Day.Reserved != 1000 || u.Key.Month.Spent != 200 || u.Account.Requests != 3 {
			t.Fatalf("usage %+v", u)
		}
	})
	t.Run("an abandoned reservation expires and is released", func(t *testing.T) {
		l := ad.New(t, nil)
		a := Admission("x1", T0)
		a.Key.MonthlyBudget, a.Cost, a.TTL = 1000, 1000, time.Minute
		if d := MustAdmit(t, l, a); !d.Allowed {
			t.Fatal(d)
		}
		b := Admission("x2", T0.Add(30*time.Second))
		b.Key.MonthlyBudget, b.Cost = 1000, 1000
		if d := MustAdmit(t, l, b); d.Allowed || d.Reason != quota.KeyMonthlyBudget {
			t.Fatalf("within TTL: %+v", d)
		}
		b.Now = T0.Add(time.Minute)
		if d := MustAdmit(t, l, b); !d.Allowed {
			t.Fatalf("after TTL: %+v", d)
		}
	})
	t.Run("runaway spend is summed over the guard window", func(t *testing.T) {
		l := ad.New(t, nil)
		var last quota.SettleResult
		for i := 0; i < 4; i++ {
			now := T0.Add(time.Duration(i) * 2 * time.Minute)
			a := Admission("r"+string(rune('0'+i)), now)
			d := MustAdmit(t, l, a)
			last = Settle(t, l, a, d, 100, 10, now)
		}
		// Settled at 0, 2, 4, 6 minutes; the 5-minute window at 6 holds 2, 4 and 6.
		if last.KeySpend != 300 {
			t.Fatalf("key spend %d, want 300", last.KeySpend)
		}
	})
}

// sharing: concurrent admissions and a store that loses its state.
func sharing(t *testing.T, ad Adapter) {
	t.Run("500 concurrent requests never overshoot the budget", func(t *testing.T) {
		l := ad.New(t, nil)
		const budget, cost = 100_000, 1_000
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < 500; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := Admission("p"+string(rune(i+1000)), T0)
				a.Account.DailyBudget, a.Cost = budget, cost
				d, err := l.Admit(context.Background(), a)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}()
		}
		wg.Wait()
		if admitted.Load() != budget/cost {
			t.Fatalf("admitted %d, want exactly %d", admitted.Load(), budget/cost)
		}
	})
	if ad.Flush != nil {
		t.Run("a flush re-seeds from the snapshot", func(t *testing.T) {
			seed := func(ctx context.Context, acc string, now time.Time) (quota.Snapshot, error) {
				return quota.Snapshot{
					Budgets: map[string]map[string]quota.Budget{"account": {"day:2026-03-14": {Spent: 900, Reserved: 50}}},
					Windows: map[string]map[int64]quota.Bucket{"key:key_1": {T0.Unix(): {Requests: 2, Tokens: 20}}},
					Reservations: []quota.Reservation{{ID: "old", KeyID: "key_1", Cost: 50, Day: "2026-03-14", Month: "2026-03",
						ExpiresAt: T0.Add(time.Hour)}},
				}, nil
			}
			l := ad.New(t, seed)
			ad.Flush(t)
			a := Admission("s1", T0.Add(time.Second))
			a.Account.DailyBudget, a.Cost, a.Key.RequestsPerMinute = 1000, 60, 3
			if d := MustAdmit(t, l, a); d.Allowed || d.Reason != quota.AccountDailyBudget || d.Requests.Remaining != 1 {
				t.Fatalf("after reseed: %+v", d)
			}
			// The seeded reservation is still held and settles normally.
			Settle(t, l, quota.Admission{ID: "old", AccountID: "acc_1", KeyID: "key_1", Cost: 50, Now: T0},
				quota.Decision{Day: "2026-03-14", Month: "2026-03"}, 0, 0, T0)
			a.Cost = 50
			if d := MustAdmit(t, l, a); !d.Allowed {
				t.Fatalf("after release: %+v", d)
			}
		})
	}
}
