package admission

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
)

// Settler returns what the executor calls once an outcome is recorded:
// the reservation is settled (or released) in the limiter, and the
// runaway guard looks at the key's recent spend. The server hands it to
// the executor (Settled) and the reaper (Released).
func Settler(cfg *config.Config, svc Service, lim quota.Limiter, logger *slog.Logger, now func() time.Time) func(ctx context.Context, c completion.Completion) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	plans := &planCache{svc: svc, now: now, plans: map[string]cachedPlan{}, loading: map[string]chan struct{}{}}
	return func(ctx context.Context, c completion.Completion) {
		o, ok := c.QuotaOutcome(c.Succeeded)
		if !ok {
			return
		}
		// The plan is only the runaway guard's: without it the settlement
		// still goes on, unguarded.
		var plan config.Plan
		planName, err := plans.planOf(ctx, c.AccountID)
		if err != nil {
			logger.WarnContext(ctx, "settle: load account; runaway guard skipped", slog.String("completion_id", c.ID), slog.Any("error", err))
		} else {
			plan, _ = cfg.Plan(planName)
		}
		ceiling, guard := plan.RunawayCeiling()
		s := o.Settlement(now())
		if guard {
			s.GuardWindow = plan.RunawayWindow.D()
		}
		retry := Retry{Limiter: lim, Logger: logger, Now: now}
		retry.Settle(ctx, s, func(ctx context.Context, res quota.SettleResult) {
			if guard && !res.Duplicate && res.KeySpend > ceiling {
				runawayGuard(ctx, svc, logger, c, res, ceiling, s.GuardWindow)
			}
		})
	}
}

// planCache caches accounts' plans (for their runaway ceiling) for a
// second, like API keys, so settling costs no database read per request.
type planCache struct {
	svc   Service
	now   func() time.Time
	mu    sync.Mutex
	plans map[string]cachedPlan
	// loading holds the accounts being read, so that settlements that miss
	// at the same time (10,000 slow requests finishing together) share one
	// read instead of each queueing one on the small pool.
	loading map[string]chan struct{}
}

// maxPlanCacheEntries bounds the plan cache (as the API's key cache is).
const maxPlanCacheEntries = 100_000

type cachedPlan struct {
	plan    string
	expires time.Time
}

func (pc *planCache) planOf(ctx context.Context, accountID string) (string, error) {
	t := pc.now()
	pc.mu.Lock()
	e, ok := pc.plans[accountID]
	wait, busy := pc.loading[accountID]
	if ok && t.Before(e.expires) {
		pc.mu.Unlock()
		return e.plan, nil
	}
	if busy {
		pc.mu.Unlock()
		select {
		case <-wait: // loaded, or failed and this caller tries itself
			return pc.planOf(ctx, accountID)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	done := make(chan struct{})
	pc.loading[accountID] = done
	pc.mu.Unlock()
	defer func() {
		pc.mu.Lock()
		delete(pc.loading, accountID)
		pc.mu.Unlock()
		close(done)
	}()
	acc, err := pc.svc.Account(ctx, accountID)
	if err != nil {
		return "", err
	}
	pc.mu.Lock()
	if len(pc.plans) >= maxPlanCacheEntries {
		clear(pc.plans)
	}
	pc.plans[accountID] = cachedPlan{plan: acc.EffectivePlan(), expires: t.Add(time.Second)}
	pc.mu.Unlock()
	return acc.EffectivePlan(), nil
}

// runawayGuard suspends a key whose spend within the window passed the
// plan's ceiling.
func runawayGuard(ctx context.Context, svc Service, logger *slog.Logger, c completion.Completion, res quota.SettleResult, ceiling money.NanoUSD, window time.Duration) {
	md := events.Metadata{AccountID: c.AccountID, CorrelationID: c.ID, CausationID: c.ID, Actor: "system:runaway_guard"}
	k, err := svc.GuardAPIKey(ctx, md, c.KeyID, account.RunawayGuard{Spent: int64(res.KeySpend), Ceiling: int64(ceiling),
		WindowSeconds: int64(window / time.Second)})
	if err != nil {
		logger.ErrorContext(ctx, "runaway guard", slog.String("key_id", c.KeyID), slog.Any("error", err))
		return
	}
	if k.Suspended != nil {
		logger.WarnContext(ctx, "runaway guard suspended a key", slog.String("key_id", c.KeyID),
			slog.Int64("spent_nano_usd", k.Suspended.SpentNanoUSD), slog.Int64("ceiling_nano_usd", k.Suspended.CeilingNanoUSD))
	}
}

// Settlement retries: the first again after 100 ms, doubling up to 5 s,
// for at most half of quota.SettledRetention, so that a retry whose first
// attempt did land is still recognised as a duplicate.
const (
	settleFirstBackoff = 100 * time.Millisecond
	settleMaxBackoff   = 5 * time.Second
	settleGiveUp       = quota.SettledRetention / 2
	// releaseGiveUp bounds the release of an admission that timed out.
	releaseGiveUp = 30 * time.Second
)

// Retry settles reservations in the limiter and keeps trying until the
// settlement lands: a limiter that misses a settlement would either
// forget the spend (once the reservation expires) or hold a stale
// reservation. Settlements are idempotent by completion id, so a retry of
// one that landed without its reply counts once.
type Retry struct {
	Limiter quota.Limiter
	Logger  *slog.Logger
	Now     func() time.Time
	// GiveUp bounds the retries; half of quota.SettledRetention when zero.
	GiveUp time.Duration
}

// Settle applies s now; if the limiter fails, it goes on in the
// background with backoff. then (may be nil) gets the result once it
// landed.
func (r Retry) Settle(ctx context.Context, s quota.Settlement, then func(context.Context, quota.SettleResult)) {
	res, err := r.Limiter.Settle(ctx, s)
	if err == nil {
		if then != nil {
			then(ctx, res)
		}
		return
	}
	r.Logger.WarnContext(ctx, "settle reservation: retrying", slog.String("completion_id", s.ID), slog.Any("error", err))
	go r.retry(ctx, s, then)
}

func (r Retry) retry(ctx context.Context, s quota.Settlement, then func(context.Context, quota.SettleResult)) {
	start, backoff := time.Now(), settleFirstBackoff
	for attempt := 2; ; attempt++ {
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			r.Logger.ErrorContext(ctx, "settle reservation", slog.String("completion_id", s.ID), slog.Any("error", ctx.Err()))
			return
		case <-t.C:
		}
		s.Now = r.Now()
		res, err := r.Limiter.Settle(ctx, s)
		if err == nil {
			r.Logger.InfoContext(ctx, "settle reservation: landed", slog.String("completion_id", s.ID), slog.Int("attempts", attempt),
				slog.Bool("duplicate", res.Duplicate))
			if then != nil {
				then(ctx, res)
			}
			return
		}
		giveUp := r.GiveUp
		if giveUp == 0 {
			giveUp = settleGiveUp
		}
		if time.Since(start) > giveUp {
			r.Logger.ErrorContext(ctx, "settle reservation", slog.String("completion_id", s.ID), slog.Int("attempts", attempt), slog.Any("error", err))
			return
		}
		backoff = min(2*backoff, settleMaxBackoff)
	}
}

// reconcile re-derives from the event log what reservations that expired
// unsettled spent, before the admission that found them answers. A
// reservation expires unsettled when the process retrying its settlement
// died, or while its completion still runs (it then settles itself, and
// the reaper releases an abandoned one).
// For each finished completion the settlement is applied again: the
// limiter counts it once (idempotent by completion id) and, the
// reservation being released already, spends its cost.
func (a *Admitter) reconcile(ctx context.Context, accountID string, expired []quota.Reservation) {
	if len(expired) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	for _, r := range expired {
		c, err := a.cfg.Service.Completion(ctx, r.ID)
		if err != nil {
			if !errors.Is(err, domainerr.ErrNotFound) {
				a.cfg.Logger.WarnContext(ctx, "reconcile expired reservation", slog.String("completion_id", r.ID), slog.Any("error", err))
			}
			continue
		}
		if !c.Finished() {
			continue
		}
		// What the limiter held, with the tokens the event log reserved.
		held := events.QuotaReserved{CostNanoUSD: int64(r.Cost), Day: r.Day, Month: r.Month}
		if c.Reservation != nil {
			held.Tokens = c.Reservation.Tokens
		}
		s := quota.Outcome{ID: r.ID, AccountID: accountID, KeyID: r.KeyID, Reservation: held, RequestedAt: c.RequestedAt,
			Succeeded: c.Succeeded}.Settlement(a.cfg.Now())
		a.retry().Settle(ctx, s, func(ctx context.Context, res quota.SettleResult) {
			if !res.Duplicate {
				a.cfg.Logger.WarnContext(ctx, "expired reservation settled from the event log", slog.String("completion_id", r.ID),
					slog.Int64("cost_nano_usd", int64(s.Cost)))
			}
		})
	}
}

// Extender returns what the executor calls after it renewed a
// claim's lease: the limiter holds the completion's reservation until the
// renewal's new end (completion.lease_renewed carries it, so the read
// model the limiter is seeded from agrees). A failure is logged and left:
// the next renewal, a third of a lease later, carries a later end, and the
// reservation held meanwhile is still counted.
func Extender(lim quota.Limiter, logger *slog.Logger, now func() time.Time) func(ctx context.Context, c completion.Completion) {
	return func(ctx context.Context, c completion.Completion) {
		r := c.Reservation
		if r == nil {
			return
		}
		if _, err := lim.Extend(ctx, quota.Extension{ID: c.ID, AccountID: c.AccountID, ExpiresAt: r.ExpiresAt, Now: now()}); err != nil {
			logger.WarnContext(ctx, "quota: extend the reservation of a renewed claim", "completion_id", c.ID, "err", err)
		}
	}
}

// ReservationMargin is how long a budget reservation outlives its claim's
// lease, kept through every renewal: what it was at the claim.
func ReservationMargin(cfg *config.Config) time.Duration {
	return max(cfg.Quota.ReservationTTL.D()-cfg.Jobs.Lease.D(), 0)
}
