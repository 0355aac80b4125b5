package completion

import (
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/quota"
)

// decideReservation checks the reservation admission made for a request.
func decideReservation(cmd RequestCompletion, r events.QuotaReserved) (events.Data, error) {
	if r.CostNanoUSD < 0 || r.Tokens < 0 {
		return nil, domainerr.Invalid("reservation", "cost and tokens cannot be negative")
	}
	if r.Day == "" || r.Month == "" {
		return nil, domainerr.Invalid("reservation", "day and month are required")
	}
	r.CompletionID, r.AccountID, r.KeyID = cmd.CompletionID, cmd.AccountID, cmd.KeyID
	r.ExpiresAt = r.ExpiresAt.UTC()
	return r, nil
}

// QuotaOutcome is the completion's reservation ending with succeeded (nil:
// failed or abandoned), for quota to compute its settlement from; false
// when the completion holds no reservation and settles nothing.
func (c Completion) QuotaOutcome(succeeded *events.CompletionSucceeded) (quota.Outcome, bool) {
	if c.Reservation == nil {
		return quota.Outcome{}, false
	}
	return quota.Outcome{ID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID, Reservation: *c.Reservation,
		RequestedAt: c.RequestedAt, Succeeded: succeeded}, true
}

// settlement is the quota event that goes with a completion's outcome:
// the real cost is spent and the rest released (succeeded), or all of it
// released for reason (failed, abandoned). A completion without a
// reservation settles nothing.
func settlement(c Completion, s *events.CompletionSucceeded, reason string) []events.Data {
	o, ok := c.QuotaOutcome(s)
	if !ok {
		return nil
	}
	return []events.Data{o.Event(reason)}
}
