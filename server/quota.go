package server

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

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
func (w *wiring) quotaLimiter(ctx context.Context) (quota.Limiter, error) {
	cfg, reg := w.cfg, w.reg
	seed := quotastate.Seeder(w.Pool)
	var lim quota.Limiter
	if cfg.Env.RedisURL == "" {
		lim = memory.New(seed)
		w.logger.Info("quota limits kept in process: exact for this replica only; set TOLLGATE_REDIS_URL to share them")
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
		w.closers = append(w.closers, rdb.Close)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rdb.Ping(pctx).Err(); err != nil {
			return nil, fmt.Errorf("redis at TOLLGATE_REDIS_URL: %w", err)
		}
		lim = quotaredis.New(rdb, RedisKeyPrefix, seed)
		w.redisPing = func(ctx context.Context) error { return rdb.Ping(ctx).Err() } // for /readyz
	}
	return quotametrics.Instrument(lim, reg)
}

// watchPlanBudgets keeps the plans' remaining budget gauge from the
// quota read model (see quotametrics.WatchPlanBudgets).
func (w *wiring) watchPlanBudgets(every time.Duration) error {
	use := func(ctx context.Context, period string) ([]quotastate.PlanBudgetUse, error) {
		return quotastate.BudgetUseByPlan(ctx, w.Pool, period)
	}
	return quotametrics.WatchPlanBudgets(w.run, w.cfg, w.reg, use, w.logger, every)
}
