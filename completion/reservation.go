package completion

import (
	"github.com/tollgate/tollgate/events"

	"github.com/tollgate/tollgate/domainerr"
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

// settlement is the quota event that goes with a completion's outcome:
// the real cost is spent and the rest released (succeeded), or all of it
// released (failed). A completion without a reservation settles nothing.
func settlement(c Completion, s *events.CompletionSucceeded) []events.Data {
	r := c.Reservation
	if r == nil {
		return nil
	}
	if s != nil {
		return []events.Data{events.QuotaSettled{
			CompletionID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID,
			ReservedNanoUSD: r.CostNanoUSD, CostNanoUSD: s.CostNanoUSD,
			ReservedTokens: r.Tokens, Tokens: s.Usage.TotalTokens, Day: r.Day, Month: r.Month,
		}}
	}
	return []events.Data{events.QuotaReleased{
		CompletionID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID,
		ReservedNanoUSD: r.CostNanoUSD, ReservedTokens: r.Tokens, Reason: events.ReleaseFailed, Day: r.Day, Month: r.Month,
	}}
}
