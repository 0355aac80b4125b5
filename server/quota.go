package server

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/memory"
	quotametrics "github.com/tollgate/tollgate/quota/metrics"
	quotaredis "github.com/tollgate/tollgate/quota/redis"
	quotastate "github.com/tollgate/tollgate/quota/state"
)

// RedisKeyPrefix starts every key Tollgate keeps in Redis.
const RedisKeyPrefix = "tollgate:quota:"

// quotaLimiter returns the limiter: Redis when TOLLGATE_REDIS_URL is set
// (one limit across replicas), in process otherwise (exact for one
// replica only). Either is seeded from the quota read models the first
// time it meets an account, so a restart or a Redis flush resets nothing.
func (s *Server) quotaLimiter(ctx context.Context, cfg *config.Config, reg prometheus.Registerer) (quota.Limiter, error) {
	seed := quotastate.Seeder(s.Pool)
	var lim quota.Limiter
	if cfg.Env.RedisURL == "" {
		lim = memory.New(seed)
		s.logger.Info("quota limits kept in process: exact for this replica only; set TOLLGATE_REDIS_URL to share them")
	} else {
		opt, err := redis.ParseURL(cfg.Env.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("TOLLGATE_REDIS_URL: %w", err)
		}
		if opt.DialTimeout == 0 {
			opt.DialTimeout = 2 * time.Second
		}
		// Admission is on every request's path: a slow Redis fails it
		// fast (503) rather than holding the request.
		opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second
		if opt.MaxRetries == 0 {
			// No blind retries (max_retries in the URL overrides): an
			// admission script that timed out may have run, and three
			// retries of a paused Redis held each request 4s, not 1s.
			opt.MaxRetries = -1
		}
		rdb := redis.NewClient(opt)
		s.closers = append(s.closers, rdb.Close)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rdb.Ping(pctx).Err(); err != nil {
			return nil, fmt.Errorf("redis at TOLLGATE_REDIS_URL: %w", err)
		}
		lim = quotaredis.New(rdb, RedisKeyPrefix, seed)
		s.redisPing = func(ctx context.Context) error { return rdb.Ping(ctx).Err() } // for /readyz
	}
	return quotametrics.Instrument(lim, reg)
}

// watchPlanBudgets keeps tollgate_quota_budget_remaining_nano_usd{plan,
// period}: each plan's budget times its accounts, less what they used, for
// today and this month, from the quota read model.
func (s *Server) watchPlanBudgets(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, every time.Duration) error {
	remaining := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tollgate_quota_budget_remaining_nano_usd",
		Help: "Budget left to the accounts of each plan in the current period (day, month), in nano-USD; absent for plans without that budget.",
	}, []string{"plan", "period"})
	if err := reg.Register(remaining); err != nil {
		return fmt.Errorf("quota metrics: %w", err)
	}
	update := func() {
		now := time.Now().UTC()
		for _, p := range []struct {
			label, period string
			budget        func(config.Plan) (int64, bool)
		}{
			{"day", "day:" + now.Format(time.DateOnly), func(p config.Plan) (int64, bool) { b, ok := p.DailyBudget(); return int64(b), ok }},
			{"month", "month:" + now.Format("2006-01"), func(p config.Plan) (int64, bool) { b, ok := p.MonthlyBudget(); return int64(b), ok }},
		} {
			uses, err := quotastate.BudgetUseByPlan(ctx, s.Pool, p.period)
			if err != nil {
				s.logger.Warn("plan budget metric", "error", err)
				return
			}
			for _, u := range uses {
				plan, ok := cfg.Plan(u.Plan)
				if !ok {
					continue
				}
				if b, ok := p.budget(plan); ok {
					remaining.WithLabelValues(u.Plan, p.label).Set(float64(b*u.Accounts - u.Used))
				}
			}
		}
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			update()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}
