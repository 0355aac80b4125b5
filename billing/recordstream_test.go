package billing_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/decidetest"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

func TestBillingRecordDecisions(t *testing.T) {
	t.Parallel()
	w := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	id := billing.RecordID("acc_1", w, 0)
	rec := billing.Record{RecordID: id, AccountID: "acc_1", WindowStart: w, WindowEnd: w.Add(time.Hour), Unit: billing.UnitTokens, Quantity: 120, Status: billing.StatusOpen}
	closed := events.BillingRecordClosed{RecordID: id, AccountID: "acc_1", WindowStart: w, WindowEnd: w.Add(time.Hour), Quantity: 100, Unit: billing.UnitTokens, StripeCustomerID: cus}
	at := w.Add(2 * time.Hour)
	reported := events.BillingUsageReported{RecordID: id, AccountID: "acc_1", StripeCustomerID: cus, EventName: "tollgate_tokens", Identifier: id, Quantity: 100, ReportedAt: at}
	flagged := func(q int64) events.BillingRecordFlagged {
		return events.BillingRecordFlagged{RecordID: id, AccountID: "acc_1", WindowStart: w, Quantity: q, Reason: events.FlagTooOld}
	}
	closeIt := func(c string) func(billing.RecordState) ([]events.Data, error) {
		return func(s billing.RecordState) ([]events.Data, error) { return billing.DecideCloseRecord(s, rec, c) }
	}
	flag := func(s billing.RecordState) ([]events.Data, error) { return billing.DecideFlagRecord(s, rec) }
	report := func(s billing.RecordState) ([]events.Data, error) {
		return billing.DecideReportRecord(s, cus, "tollgate_tokens", at)
	}
	decidetest.Run(t, billing.RecordStream(id), billing.FoldRecord, []decidetest.Case[billing.RecordState]{
		{Name: "close freezes the read model's quantity", When: closeIt(cus), Then: []events.Data{events.BillingRecordClosed{
			RecordID: id, AccountID: "acc_1", WindowStart: w, WindowEnd: w.Add(time.Hour), Quantity: 120, Unit: billing.UnitTokens, StripeCustomerID: cus}}},
		{Name: "close needs a customer", When: closeIt(""), Err: domainerr.ErrInvalid, Field: "stripe_customer_id"},
		{Name: "closed once", Given: []events.Data{closed}, When: closeIt(cus), Err: domainerr.ErrWrongState},
		{Name: "report sends the closed quantity", Given: []events.Data{closed}, When: report, Then: []events.Data{reported}},
		{Name: "report needs a close", When: report, Err: domainerr.ErrWrongState},
		{Name: "reported once", Given: []events.Data{closed, reported}, When: report, Err: domainerr.ErrWrongState},
		{Name: "flag an open record at the read model's quantity", When: flag, Then: []events.Data{flagged(120)}},
		{Name: "flag a closed record at its closed quantity", Given: []events.Data{closed}, When: flag, Then: []events.Data{flagged(100)}},
		{Name: "flagged once", Given: []events.Data{flagged(120)}, When: flag, Err: domainerr.ErrWrongState},
		{Name: "a reported record is not flagged", Given: []events.Data{closed, reported}, When: flag, Err: domainerr.ErrWrongState},
	})
}

func TestRecordStepsAndWindows(t *testing.T) {
	t.Parallel()
	c := &events.BillingRecordClosed{}
	for _, tc := range []struct {
		s    billing.RecordState
		want billing.RecordStep
	}{
		{billing.RecordState{}, billing.StepClose},
		{billing.RecordState{Closed: c}, billing.StepSend},
		{billing.RecordState{Closed: c, Reported: true}, billing.StepReported},
		{billing.RecordState{Flagged: true}, billing.StepFlagged},
	} {
		if got := tc.s.Next(); got != tc.want {
			t.Errorf("%+v: next = %v, want %v", tc.s, got, tc.want)
		}
	}
	now := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		start time.Time
		want  billing.Window
	}{
		{now.Add(-24 * time.Hour), billing.WindowOK},
		{now.Add(-49 * time.Hour), billing.WindowTooOld},
		{now.Add(billing.MaxFutureSkew), billing.WindowOK},
		{now.Add(billing.MaxFutureSkew + time.Second), billing.WindowTooNew},
	} {
		if got := billing.CheckWindow(tc.start, now, 48*time.Hour); got != tc.want {
			t.Errorf("window from %s: %v, want %v", tc.start, got, tc.want)
		}
	}
	if err := billing.CheckRecordID("br_abc123"); err != nil {
		t.Error(err)
	}
	if err := billing.CheckRecordID("br_a-b"); err == nil {
		t.Error("br_a-b: no error")
	}
}
