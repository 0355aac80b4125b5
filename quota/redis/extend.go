package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/quota"
)

// extendScript moves a held reservation's expiry later (never earlier);
// KEYS[1] is the reservations' hash, KEYS[2] their expiry set. It returns
// 1 when the reservation is held, 0 when it was settled or is unknown.
var extendScript = goredis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
return 1
`)

// Extend implements quota.Limiter. It reports whether the reservation was
// held. An account Redis lost is seeded from the read model, whose
// reservation ends follow the same renewals (completion.lease_renewed), so
// nothing needs seeding here.
func (r *Limiter) Extend(ctx context.Context, e quota.Extension) (bool, error) {
	k := r.keys(e.AccountID, "", "", "")
	n, err := extendScript.Run(ctx, r.rdb, []string{k.res, k.resx}, e.ID, e.ExpiresAt.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("%w: extend: %w", quota.ErrLimiter, err)
	}
	return n == 1, nil
}
