package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/handlers"
	"github.com/tollgate/tollgate/quota"
)

// readyChecks are /readyz's dependencies: the database, the bus and, when
// the quota limiter uses it, Redis. On the PostgreSQL bus the bus check
// reaches the same server as the database one; both are named so that an
// operator reads which role's dependency is down.
func (s *Server) readyChecks(busCfg bus.Config) []handlers.ReadyCheck {
	checks := []handlers.ReadyCheck{
		{Name: string(handlers.DependencyDatabase), Check: func(ctx context.Context) error { return s.Pool.Ping(ctx) }},
		{Name: string(handlers.DependencyBus), Check: func(ctx context.Context) error { return bus.Ping(ctx, busCfg) }},
	}
	if s.redisPing != nil {
		checks = append(checks, handlers.ReadyCheck{Name: string(handlers.DependencyRedis), Check: s.redisPing})
	}
	return checks
}

// redisLogger writes go-redis's own log lines as warnings whose error is
// the limiter's, so the outage log says them once per interval.
type redisLogger struct{ logger *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.logger.WarnContext(ctx, "redis client", "error", fmt.Errorf("%w: %s", quota.ErrLimiter, fmt.Sprintf(format, v...)))
}
