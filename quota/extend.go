package quota

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Extension moves an outstanding reservation's end: a completion still
// running (its executor renewed its lease) keeps its reservation for as
// long as it runs, so concurrent admissions keep counting it.
type Extension struct {
	ID        string
	AccountID string
	ExpiresAt time.Time
	Now       time.Time
}

// extendScript moves a held reservation's expiry later (never earlier);
// KEYS[1] is the reservations' hash, KEYS[2] their expiry set. It returns
// 1 when the reservation is held, 0 when it was settled or is unknown.
var extendScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
return 1
`)

// Extend implements Limiter. It reports whether the reservation was held.
// An account Redis lost is seeded from the read model, whose reservation
// ends follow the same renewals (completion.lease_renewed), so nothing
// needs seeding here.
func (r *Redis) Extend(ctx context.Context, e Extension) (bool, error) {
	k := r.keys(e.AccountID, "", "", "")
	n, err := extendScript.Run(ctx, r.rdb, []string{k.res, k.resx}, e.ID, e.ExpiresAt.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("%w: extend: %w", ErrLimiter, err)
	}
	return n == 1, nil
}

// Extend implements Limiter.
func (m *Memory) Extend(ctx context.Context, e Extension) (bool, error) {
	acc, err := m.account(ctx, e.AccountID, e.Now)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := acc.resv[e.ID]
	if !ok {
		return false, nil
	}
	if e.ExpiresAt.After(r.ExpiresAt) {
		r.ExpiresAt = e.ExpiresAt
		acc.resv[e.ID] = r
	}
	return true, nil
}
