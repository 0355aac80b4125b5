package billing

import (
	"fmt"
	"regexp"
	"time"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// MaxIdentifierLen is Stripe's limit on a meter event's identifier and
// event name.
const MaxIdentifierLen = 100

// MaxFutureSkew is how far in the future Stripe accepts a meter event's
// timestamp.
const MaxFutureSkew = 5 * time.Minute

// recordIDPattern is the form of a billing record id (see the event schemas).
var recordIDPattern = regexp.MustCompile(`^br_[A-Za-z0-9]+$`)

// RecordStream is the stream of a billing record: its authority,
// "billingrecord-<id>": the reporter first freezes the record's quantity
// with billing.record_closed, then sends one meter event whose identifier
// is the record id, then records billing.usage_reported. A crash anywhere
// leads the next pass to resume from the stream, re-sending the same
// identifier with the same closed quantity and customer, which Stripe
// deduplicates. A record too old for Stripe is frozen with
// billing.record_flagged instead and left to an operator.
func RecordStream(recordID string) string { return events.StreamBillingRecord + recordID }

// RecordState is a billing record's stream folded.
type RecordState struct {
	// Version is the stream version folded.
	Version int64
	// Closed is the record's billing.record_closed, nil before it is closed.
	Closed *events.BillingRecordClosed
	// ClosedID is the event id of Closed.
	ClosedID string
	// Reported: Stripe accepted the record's meter event.
	Reported bool
	// Flagged: the record was too old for Stripe.
	Flagged bool
}

// AtVersion is the stream version the state was folded at.
func (s RecordState) AtVersion() int64 { return s.Version }

// Owner is the record's account once it is closed.
func (s RecordState) Owner() string {
	if s.Closed != nil {
		return s.Closed.AccountID
	}
	return ""
}

// FoldRecord folds a billing record's stream.
func FoldRecord(evs []events.Envelope) (RecordState, error) {
	var s RecordState
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return s, err
		}
		switch d := d.(type) {
		case events.BillingRecordClosed:
			s.Closed = &d
			s.ClosedID = e.EventID.String()
		case events.BillingUsageReported:
			s.Reported = true
		case events.BillingRecordFlagged:
			s.Flagged = true
		default:
			return s, fmt.Errorf("unexpected event %s (%s) in %s", e.EventID, e.Type, e.StreamID)
		}
		s.Version = e.StreamVersion
	}
	return s, nil
}

// RecordStep is what a record's stream says comes next.
type RecordStep int

// Record steps, in the order a record goes through them.
const (
	// StepClose: the record is not closed yet.
	StepClose RecordStep = iota
	// StepSend: closed; its meter event is to be sent (again).
	StepSend
	// StepReported: Stripe accepted it; nothing left to do.
	StepReported
	// StepFlagged: too old for Stripe, frozen; nothing left to do.
	StepFlagged
)

// Next is the record's next step.
func (s RecordState) Next() RecordStep {
	switch {
	case s.Reported:
		return StepReported
	case s.Flagged:
		return StepFlagged
	case s.Closed == nil:
		return StepClose
	}
	return StepSend
}

// CheckRecordID refuses an id that is not a billing record's, or too long
// to be a Stripe meter event identifier.
func CheckRecordID(id string) error {
	if !recordIDPattern.MatchString(id) || len(id) > MaxIdentifierLen {
		return fmt.Errorf("record id %q is not of the form br_<alphanumeric>, at most %d characters", id, MaxIdentifierLen)
	}
	return nil
}

// CheckRecord refuses a record of the read model that cannot be closed.
func CheckRecord(rec Record) error {
	if rec.Quantity < 0 || rec.Unit == "" || rec.AccountID == "" || !rec.WindowEnd.After(rec.WindowStart) {
		return fmt.Errorf("invalid record %+v", rec)
	}
	return nil
}

// Window is where a meter event's timestamp stands against Stripe's limits.
type Window int

// Window verdicts.
const (
	// WindowOK: Stripe takes it.
	WindowOK Window = iota
	// WindowTooOld: older than maxAge; the record is flagged.
	WindowTooOld
	// WindowTooNew: more than MaxFutureSkew ahead; left for a later pass.
	WindowTooNew
)

// CheckWindow tells whether a meter event stamped at windowStart is within
// Stripe's limits at now, maxAge being the oldest it takes.
func CheckWindow(windowStart, now time.Time, maxAge time.Duration) Window {
	switch {
	case now.Sub(windowStart) > maxAge:
		return WindowTooOld
	case windowStart.Sub(now) > MaxFutureSkew:
		return WindowTooNew
	}
	return WindowOK
}

// DecideCloseRecord freezes a record at the read model's quantity, to be
// reported to customer: billing.record_closed.
func DecideCloseRecord(s RecordState, rec Record, customer string) ([]events.Data, error) {
	if s.Next() != StepClose {
		return nil, fmt.Errorf("close billing record %s: %w", rec.RecordID, domainerr.ErrWrongState)
	}
	if err := CheckRecord(rec); err != nil {
		return nil, domainerr.Invalid("record", "%s", err)
	}
	if customer == "" {
		return nil, domainerr.Invalid("stripe_customer_id", "is required")
	}
	return []events.Data{events.BillingRecordClosed{
		RecordID:         rec.RecordID,
		AccountID:        rec.AccountID,
		WindowStart:      rec.WindowStart.UTC(),
		WindowEnd:        rec.WindowEnd.UTC(),
		Quantity:         rec.Quantity,
		Unit:             rec.Unit,
		StripeCustomerID: customer,
	}}, nil
}

// DecideFlagRecord freezes a record too old for Stripe and takes it out
// of the queue: billing.record_flagged, at its closed quantity when it was
// closed (then not sent before Stripe's window ended, a long outage), else
// at the read model's.
func DecideFlagRecord(s RecordState, rec Record) ([]events.Data, error) {
	if n := s.Next(); n != StepClose && n != StepSend {
		return nil, fmt.Errorf("flag billing record %s: %w", rec.RecordID, domainerr.ErrWrongState)
	}
	f := events.BillingRecordFlagged{
		RecordID: rec.RecordID, AccountID: rec.AccountID, WindowStart: rec.WindowStart.UTC(), Quantity: rec.Quantity, Reason: events.FlagTooOld,
	}
	if c := s.Closed; c != nil {
		f.AccountID, f.WindowStart, f.Quantity = c.AccountID, c.WindowStart.UTC(), c.Quantity
	}
	return []events.Data{f}, nil
}

// DecideReportRecord records that Stripe accepted a closed record's meter
// event (named eventName, sent for customer) at reportedAt:
// billing.usage_reported, with the closed quantity.
func DecideReportRecord(s RecordState, customer, eventName string, reportedAt time.Time) ([]events.Data, error) {
	if s.Next() != StepSend {
		return nil, fmt.Errorf("report billing record: %w", domainerr.ErrWrongState)
	}
	c := s.Closed
	return []events.Data{events.BillingUsageReported{
		RecordID:         c.RecordID,
		AccountID:        c.AccountID,
		StripeCustomerID: customer,
		EventName:        eventName,
		Identifier:       c.RecordID,
		Quantity:         c.Quantity,
		ReportedAt:       reportedAt.UTC(),
	}}, nil
}
