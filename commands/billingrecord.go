package commands

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/events"
)

// The billing record aggregate: its stream is written by the billing
// reporter, which calls Stripe between loading a record and recording
// what came of it. So the commands take the state the reporter loaded
// (BillingRecord) and append at its version: a concurrent reporter makes
// them fail with events.ErrConflict, and the reporter loads again. Event
// ids derive from the stream and type (each happens once per record).

// At returns a Service whose events are stamped at now: the billing
// reporter stamps a pass's events with the time the pass started.
func (s *Service) At(now time.Time) *Service {
	c := *s
	c.now = func() time.Time { return now }
	return &c
}

// BillingRecord loads a billing record's stream.
func (s *Service) BillingRecord(ctx context.Context, recordID string) (billing.RecordState, error) {
	st, _, err := load(ctx, s, billing.RecordStream(recordID), billing.FoldRecord)
	return st, err
}

// CloseRecord appends billing.record_closed to a record in state st (see
// billing.DecideCloseRecord).
func (s *Service) CloseRecord(ctx context.Context, md events.Metadata, st billing.RecordState, rec billing.Record, customer string) error {
	return s.decideRecord(ctx, md, rec.RecordID, st, func() ([]events.Data, error) {
		return billing.DecideCloseRecord(st, rec, customer)
	})
}

// FlagRecord appends billing.record_flagged to a record in state st (see
// billing.DecideFlagRecord).
func (s *Service) FlagRecord(ctx context.Context, md events.Metadata, st billing.RecordState, rec billing.Record) error {
	return s.decideRecord(ctx, md, rec.RecordID, st, func() ([]events.Data, error) {
		return billing.DecideFlagRecord(st, rec)
	})
}

// RecordReported appends billing.usage_reported to a closed record in
// state st (see billing.DecideReportRecord).
func (s *Service) RecordReported(ctx context.Context, md events.Metadata, st billing.RecordState, recordID, customer, eventName string) error {
	return s.decideRecord(ctx, md, recordID, st, func() ([]events.Data, error) {
		return billing.DecideReportRecord(st, customer, eventName, s.now())
	})
}

// decideRecord decides on st and appends at its version.
func (s *Service) decideRecord(ctx context.Context, md events.Metadata, recordID string, st billing.RecordState, decide func() ([]events.Data, error)) error {
	data, err := decide()
	if err != nil {
		return err
	}
	_, err = s.appendSeeded(ctx, billing.RecordStream(recordID), st.Version, md, data, once(st))
	return err
}
