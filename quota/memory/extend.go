package memory

import (
	"context"

	"github.com/tollgate/tollgate/quota"
)

// Extend implements quota.Limiter.
func (m *Limiter) Extend(ctx context.Context, e quota.Extension) (bool, error) {
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
