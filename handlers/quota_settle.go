package handlers

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
)

// QuotaSettler returns what the executor calls once an outcome is
// recorded: the reservation is settled (or released) in the limiter, and
// the runaway guard looks at the key's recent spend.
func QuotaSettler(cfg *config.Config, svc *commands.Service, lim quota.Limiter, logger *slog.Logger, now func() time.Time) func(ctx context.Context, c completion.Completion) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	plans := &planCache{svc: svc, now: now, plans: map[string]cachedPlan{}, loading: map[string]chan struct{}{}}
	return func(ctx context.Context, c completion.Completion) {
		r := c.Reservation
		if r == nil {
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
		s := quota.Settlement{ID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID, Reserved: money.NanoUSD(r.CostNanoUSD),
			ReservedTokens: r.Tokens, At: c.RequestedAt, Day: r.Day, Month: r.Month, Now: now()}
		if c.Succeeded != nil {
			s.Cost, s.Tokens = money.NanoUSD(c.Succeeded.CostNanoUSD), c.Succeeded.Usage.TotalTokens
		}
		if guard {
			s.GuardWindow = plan.RunawayWindow.D()
		}
		retry := settleRetry{lim: lim, logger: logger, now: now}
		retry.settle(ctx, s, func(ctx context.Context, res quota.SettleResult) {
			if guard && !res.Duplicate && res.KeySpend > ceiling {
				runawayGuard(ctx, svc, logger, c, res, ceiling, s.GuardWindow)
			}
		})
	}
}

// planCache caches accounts' plans (for their runaway ceiling) for a
// second, like API keys, so settling costs no database read per request.
type planCache struct {
	svc   *commands.Service
	now   func() time.Time
	mu    sync.Mutex
	plans map[string]cachedPlan
	// loading holds the accounts being read, so that settlements that miss
	// at the same time (10,000 slow requests finishing together) share one
	// read instead of each queueing one on the small pool.
	loading map[string]chan struct{}
}

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
	if len(pc.plans) >= maxKeyCacheEntries {
		clear(pc.plans)
	}
	pc.plans[accountID] = cachedPlan{plan: acc.EffectivePlan(), expires: t.Add(time.Second)}
	pc.mu.Unlock()
	return acc.EffectivePlan(), nil
}

// runawayGuard suspends a key whose spend within the window passed the
// plan's ceiling.
func runawayGuard(ctx context.Context, svc *commands.Service, logger *slog.Logger, c completion.Completion, res quota.SettleResult, ceiling money.NanoUSD, window time.Duration) {
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

// settleRetry settles reservations in the limiter and keeps trying until
// the settlement lands: a limiter that misses a settlement would either
// forget the spend (once the reservation expires) or hold a stale
// reservation. Settlements are idempotent by completion id, so a retry of
// one that landed without its reply counts once.
type settleRetry struct {
	lim    quota.Limiter
	logger *slog.Logger
	now    func() time.Time
	// giveUp bounds the retries; settleGiveUp when zero.
	giveUp time.Duration
}

func (a *API) settler() settleRetry {
	return settleRetry{lim: a.cfg.Quota.Limiter, logger: a.cfg.Logger, now: a.cfg.Now}
}

// settle applies s now; if the limiter fails, it goes on in the
// background with backoff. then (may be nil) gets the result once it
// landed.
func (r settleRetry) settle(ctx context.Context, s quota.Settlement, then func(context.Context, quota.SettleResult)) {
	res, err := r.lim.Settle(ctx, s)
	if err == nil {
		if then != nil {
			then(ctx, res)
		}
		return
	}
	r.logger.WarnContext(ctx, "settle reservation: retrying", slog.String("completion_id", s.ID), slog.Any("error", err))
	go r.retry(ctx, s, then)
}

func (r settleRetry) retry(ctx context.Context, s quota.Settlement, then func(context.Context, quota.SettleResult)) {
	start, backoff := time.Now(), settleFirstBackoff
	for attempt := 2; ; attempt++ {
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			r.logger.ErrorContext(ctx, "settle reservation", slog.String("completion_id", s.ID), slog.Any("error", ctx.Err()))
			return
		case <-t.C:
		}
		s.Now = r.now()
		res, err := r.lim.Settle(ctx, s)
		if err == nil {
			r.logger.InfoContext(ctx, "settle reservation: landed", slog.String("completion_id", s.ID), slog.Int("attempts", attempt),
				slog.Bool("duplicate", res.Duplicate))
			if then != nil {
				then(ctx, res)
			}
			return
		}
		giveUp := r.giveUp
		if giveUp == 0 {
			giveUp = settleGiveUp
		}
		if time.Since(start) > giveUp {
			r.logger.ErrorContext(ctx, "settle reservation", slog.String("completion_id", s.ID), slog.Int("attempts", attempt), slog.Any("error", err))
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
func (a *API) reconcile(ctx context.Context, accountID string, expired []quota.Reservation) {
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
		s := quota.Settlement{ID: r.ID, AccountID: accountID, KeyID: r.KeyID, Reserved: r.Cost, At: c.RequestedAt,
			Day: r.Day, Month: r.Month, Now: a.cfg.Now()}
		if c.Reservation != nil {
			s.ReservedTokens = c.Reservation.Tokens
		}
		if c.Succeeded != nil {
			s.Cost, s.Tokens = money.NanoUSD(c.Succeeded.CostNanoUSD), c.Succeeded.Usage.TotalTokens
		}
		a.settler().settle(ctx, s, func(ctx context.Context, res quota.SettleResult) {
			if !res.Duplicate {
				a.cfg.Logger.WarnContext(ctx, "expired reservation settled from the event log", slog.String("completion_id", r.ID),
					slog.Int64("cost_nano_usd", int64(s.Cost)))
			}
		})
	}
}

// QuotaExtender returns what the executor calls after it renewed a
// claim's lease: the limiter holds the completion's reservation until the
// renewal's new end (completion.lease_renewed carries it, so the read
// model the limiter is seeded from agrees). A failure is logged and left:
// the next renewal, a third of a lease later, carries a later end, and the
// reservation held meanwhile is still counted.
func QuotaExtender(lim quota.Limiter, logger *slog.Logger, now func() time.Time) func(ctx context.Context, c completion.Completion) {
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
