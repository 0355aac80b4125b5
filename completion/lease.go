package completion

import (
	"fmt"
	"time"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

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
		return nil, fmt.Errorf("completion: %w", domainerr.ErrNotFound)
	case cmd.Executor == "":
		return nil, domainerr.Invalid("executor", "is required")
	case cmd.Lease <= 0:
		return nil, domainerr.Invalid("lease", "must be positive")
	case c.Status != StatusRunning:
		return nil, fmt.Errorf("completion %s is %q, not running: %w", c.ID, c.Status, domainerr.ErrClaimLost)
	case c.Executor != cmd.Executor:
		return nil, fmt.Errorf("completion %s is claimed by %s, not %s: %w", c.ID, c.Executor, cmd.Executor, domainerr.ErrClaimLost)
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
