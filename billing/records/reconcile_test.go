package records_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

func TestReconcileAndExplain(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	facts := newSet(t, pool, projections.LiveSchema, records.NewFacts(projections.LiveSchema))
	w := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)
	ledger := map[string]string{}
	completion := func(id, account string, prompt, compl int64, record string) {
		ev := uuid.NewString()
		ledger[id] = ev
		if _, err := pool.Exec(ctx, `INSERT INTO usage_ledger VALUES ($1,$2,'key_1','echo','echo','echo',$3,$4,false,0,$5,$6)`,
			id, account, prompt, compl, w.Add(10*time.Minute), ev); err != nil {
			t.Fatal(err)
		}
		if record != "" {
			if _, err := pool.Exec(ctx, `INSERT INTO billing_record_items VALUES ($1,$2,$3)`, id, record, prompt+compl); err != nil {
				t.Fatal(err)
			}
		}
	}
	record := func(id, account string, seq int, qty int64, status string) {
		if _, err := pool.Exec(ctx, `INSERT INTO billing_records (record_id, account_id, window_start, window_end, seq, unit, quantity, status)
			VALUES ($1,$2,$3,$4,$5,'tokens',$6,$7)`, id, account, w, w.Add(time.Hour), seq, qty, status); err != nil {
			t.Fatal(err)
		}
	}
	appendEv := func(d events.Data, stream string, v int64) string {
		e, err := events.New(stream, d, events.Metadata{Actor: "test"}, w.Add(2*time.Hour), "")
		if err != nil {
			t.Fatal(err)
		}
		stored, err := store.Append(ctx, stream, v, e)
		if err != nil {
			t.Fatal(err)
		}
		// The record's facts, as the projector keeps them.
		handleAll(t, facts, stored...)
		return e.EventID.String()
	}
	completion("chatcmpl-a1", "acc_1", 60, 40, "br_a")
	completion("chatcmpl-a2", "acc_1", 30, 20, "br_a")
	record("br_a", "acc_1", 0, 150, "reported")
	closedA := appendEv(events.BillingRecordClosed{RecordID: "br_a", AccountID: "acc_1", WindowStart: w, WindowEnd: w.Add(time.Hour), Quantity: 150, Unit: "tokens"}, "billingrecord-br_a", 0)
	reportedA := appendEv(events.BillingUsageReported{RecordID: "br_a", AccountID: "acc_1", StripeCustomerID: "cus_1", EventName: "tollgate_tokens",
		Identifier: "br_a", Quantity: 150, ReportedAt: w.Add(2 * time.Hour)}, "billingrecord-br_a", 1)

	completion("chatcmpl-b1", "acc_2", 50, 20, "br_b")
	record("br_b", "acc_2", 0, 70, "open")
	completion("chatcmpl-b2", "acc_2", 20, 10, "") // lost on its way to billing

	r, err := records.Reconcile(ctx, pool, "tokens", "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	if r.Agrees || len(r.Accounts) != 2 {
		t.Fatalf("reconciliation %+v", r)
	}
	a1, a2 := r.Accounts[0], r.Accounts[1]
	if !a1.Agrees || a1.Ledger != 150 || a1.Billable != 150 || a1.Reported != 150 || len(a1.Differences) != 0 {
		t.Errorf("acc_1 %+v", a1)
	}
	if a2.Agrees || a2.Ledger != 100 || a2.Billable != 70 || a2.Reported != 0 || len(a2.Differences) != 2 {
		t.Fatalf("acc_2 %+v", a2)
	}
	for _, d := range a2.Differences {
		switch d.Kind {
		case "completion_not_billed":
			if d.CompletionID != "chatcmpl-b2" || d.Quantity != 30 || len(d.EventIDs) != 1 || d.EventIDs[0] != ledger["chatcmpl-b2"] {
				t.Errorf("difference %+v", d)
			}
		case "record_not_reported":
			if d.RecordID != "br_b" || d.Quantity != 70 || len(d.EventIDs) != 1 || d.EventIDs[0] != ledger["chatcmpl-b1"] {
				t.Errorf("difference %+v", d)
			}
		default:
			t.Errorf("unexpected difference %+v", d)
		}
	}
	if other, err := records.Reconcile(ctx, pool, "tokens", "2026-10"); err != nil || !other.Agrees || len(other.Accounts) != 0 {
		t.Errorf("October: %+v, %v", other, err)
	}
	if _, err := records.Reconcile(ctx, pool, "tokens", "2026-13"); err == nil {
		t.Error("bad period accepted")
	}

	ex, err := records.Explain(ctx, pool, "acc_1", "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 1 {
		t.Fatalf("explain %+v", ex)
	}
	e := ex[0]
	if e.RecordID != "br_a" || e.ReportedQuantity != 150 || e.ReportedEventID != reportedA || e.ClosedEventID != closedA ||
		e.Identifier != "br_a" || e.StripeCustomerID != "cus_1" || e.ItemsQuantity != 150 || len(e.Items) != 2 {
		t.Fatalf("explained %+v", e)
	}
	for _, it := range e.Items {
		if it.EventID != ledger[it.CompletionID] {
			t.Errorf("item %+v: event id, want %s", it, ledger[it.CompletionID])
		}
	}
}
