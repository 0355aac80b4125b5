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

// watchPlanBudgets keeps the plans' remaining budget gauge from the
// quota read model (see quotametrics.WatchPlanBudgets).
func (s *Server) watchPlanBudgets(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, every time.Duration) error {
	use := func(ctx context.Context, period string) ([]quotastate.PlanBudgetUse, error) {
		return quotastate.BudgetUseByPlan(ctx, s.Pool, period)
	}
	return quotametrics.WatchPlanBudgets(ctx, cfg, reg, use, s.logger, every)
}
