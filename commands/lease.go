package commands

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// RenewClaim renews the lease of the claim c, which the caller holds,
// deciding on c as FinishClaimed does and appending at c.Version: the
// caller is the stream's only writer while its claim stands, so a
// conflict means a reaper ended the claim, and RenewClaim returns
// ErrClaimLost (with the conflict). The renewal's id derives from the
// stream and the version it follows, so a retried append stores nothing
// new. It returns the state after the renewal (c itself when nothing was
// to renew).
func (s *Service) RenewClaim(ctx context.Context, md events.Metadata, c completion.Completion, cmd completion.RenewLease) (completion.Completion, error) {
	data, err := completion.DecideRenewLease(c, cmd)
	if err != nil || len(data) == 0 {
		return c, err
	}
	md.AccountID = c.AccountID
	stored, err := s.appendSeeded(ctx, completion.CompletionStream(c.ID), c.Version, md, data, "renew|v"+strconv.FormatInt(c.Version, 10))
	if errors.Is(err, events.ErrConflict) {
		return c, fmt.Errorf("renew the lease of %s: %w: %w", c.ID, domainerr.ErrClaimLost, err)
	}
	if err != nil {
		return c, fmt.Errorf("renew the lease of %s: %w", c.ID, err)
	}
	return c.Apply(stored...)
}
