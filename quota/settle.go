package quota

import (
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/money"
)

// Outcome is how a completion that holds a reservation ended: all a
// settlement is computed from. Every settlement is computed here, once:
// the quota event a completion's outcome is recorded with (Event), the
// limiter's settlement once it is recorded and the re-derivation of an
// expired reservation from the event log (Settlement).
type Outcome struct {
	// ID, AccountID and KeyID are the completion's.
	ID, AccountID, KeyID string
	// Reservation is what admission reserved.
	Reservation events.QuotaReserved
	// RequestedAt is when the request was admitted: the window second
	// whose worst-case tokens the settlement corrects.
	RequestedAt time.Time
	// Succeeded is the success with its real usage and cost; nil when the
	// completion failed or was abandoned, which releases it all.
	Succeeded *events.CompletionSucceeded
}

// Settlement is the limiter's settlement of o at now: the real cost and
// tokens of a success are spent, and the reservation released.
func (o Outcome) Settlement(now time.Time) Settlement {
	r := o.Reservation
	s := Settlement{ID: o.ID, AccountID: o.AccountID, KeyID: o.KeyID, Reserved: money.NanoUSD(r.CostNanoUSD),
		ReservedTokens: r.Tokens, At: o.RequestedAt, Day: r.Day, Month: r.Month, Now: now}
	if o.Succeeded != nil {
		s.Cost, s.Tokens = money.NanoUSD(o.Succeeded.CostNanoUSD), o.Succeeded.Usage.TotalTokens
	}
	return s
}

// Event is the quota event recorded with the outcome, for the same
// settlement: quota.settled (the real cost spent, the rest released) for
// a success, else quota.released of all of it, for reason.
func (o Outcome) Event(reason string) events.Data {
	s := o.Settlement(time.Time{})
	if o.Succeeded != nil {
		return events.QuotaSettled{
			CompletionID: s.ID, AccountID: s.AccountID, KeyID: s.KeyID,
			ReservedNanoUSD: int64(s.Reserved), CostNanoUSD: int64(s.Cost),
			ReservedTokens: s.ReservedTokens, Tokens: s.Tokens, Day: s.Day, Month: s.Month,
		}
	}
	return events.QuotaReleased{
		CompletionID: s.ID, AccountID: s.AccountID, KeyID: s.KeyID,
		ReservedNanoUSD: int64(s.Reserved), ReservedTokens: s.ReservedTokens, Reason: reason, Day: s.Day, Month: s.Month,
	}
}

// Release is the settlement of an admission whose completion was never
// recorded (its append failed, or the admission itself timed out):
// nothing is spent and all of it is released, in the periods admission
// charged.
func Release(a Admission, now time.Time) Settlement {
	day, month, _, _ := Periods(a.Now)
	return Settlement{ID: a.ID, AccountID: a.AccountID, KeyID: a.KeyID, Reserved: a.Cost, ReservedTokens: a.Tokens,
		At: a.Now, Day: day, Month: month, Now: now}
}
