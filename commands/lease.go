package commands

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/events"
)

// ErrClaimLost: the executor's claim was ended by someone else (a reaper
// found its lease expired: it had stopped renewing it) before it recorded
// an outcome. Its work is not recorded and not billed; the stream already
// holds the run's one outcome (abandoned, or requeued for a retry).
var ErrClaimLost = errors.New("claim lost")

// RenewLease extends the lease of a running completion's claim: the
// executor holding it is still working on it.
type RenewLease struct {
	Executor string
	// Now is the executor's clock reading; the lease then runs to Now+Lease.
	Now   time.Time
	Lease time.Duration
	// ReservationMargin is how long the completion's budget reservation
	// outlives its lease (quota.reservation_ttl − jobs.lease); 0 leaves
	// the reservation's end where it is.
	ReservationMargin time.Duration
}

// DecideRenewLease decides on a renewal. Only the executor holding the
// claim of a running completion may renew it; anyone else, or a
// completion that is no longer running (a reaper ended the claim, an
// outcome was recorded), gets ErrClaimLost. A renewal that would not move
// the lease's end forward (a clock that went back) decides nothing.
//
// A lease that already ended may still be renewed while the stream shows
// the claim: no reaper has acted on it, and the executor is evidently
// alive. A reaper that decided on the older version loses the race on
// its append, and so does a renewal that comes after the reaper's.
func DecideRenewLease(c Completion, cmd RenewLease) ([]events.Data, error) {
	switch {
	case c.Status == StatusNone:
		return nil, fmt.Errorf("completion: %w", ErrNotFound)
	case cmd.Executor == "":
		return nil, invalid("executor", "is required")
	case cmd.Lease <= 0:
		return nil, invalid("lease", "must be positive")
	case c.Status != StatusRunning:
		return nil, fmt.Errorf("completion %s is %q, not running: %w", c.ID, c.Status, ErrClaimLost)
	case c.Executor != cmd.Executor:
		return nil, fmt.Errorf("completion %s is claimed by %s, not %s: %w", c.ID, c.Executor, cmd.Executor, ErrClaimLost)
	}
	until := cmd.Now.Add(cmd.Lease).UTC()
	if !until.After(c.LeaseExpiresAt) {
		return nil, nil
	}
	renewed := events.CompletionLeaseRenewed{CompletionID: c.ID, Executor: c.Executor, LeaseExpiresAt: until, Renewal: c.Renewals + 1}
	if r := c.Reservation; r != nil && cmd.ReservationMargin > 0 {
		if end := until.Add(cmd.ReservationMargin); end.After(r.ExpiresAt) {
			renewed.ReservationExpiresAt = end
		}
	}
	return []events.Data{renewed}, nil
}

// RenewClaim renews the lease of the claim c, which the caller holds,
// deciding on c as FinishClaimed does and appending at c.Version: the
// caller is the stream's only writer while its claim stands, so a
// conflict means a reaper ended the claim, and RenewClaim returns
// ErrClaimLost (with the conflict). The renewal's id derives from the
// stream and the version it follows, so a retried append stores nothing
// new. It returns the state after the renewal (c itself when nothing was
// to renew).
func (s *Service) RenewClaim(ctx context.Context, md events.Metadata, c Completion, cmd RenewLease) (Completion, error) {
	data, err := DecideRenewLease(c, cmd)
	if err != nil || len(data) == 0 {
		return c, err
	}
	md.AccountID = c.AccountID
	stored, err := s.appendSeeded(ctx, CompletionStream(c.ID), c.Version, md, data, "renew|v"+strconv.FormatInt(c.Version, 10))
	if errors.Is(err, events.ErrConflict) {
		return c, fmt.Errorf("renew the lease of %s: %w: %w", c.ID, ErrClaimLost, err)
	}
	if err != nil {
		return c, fmt.Errorf("renew the lease of %s: %w", c.ID, err)
	}
	return c.Apply(stored...)
}
