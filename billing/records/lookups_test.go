package records_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

func TestCustomerLinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	s := newSet(t, pool, projections.LiveSchema)
	link := func(account, customer string) []events.Envelope {
		return l.Append(events.StreamAccount+account, account, day0, events.BillingCustomerLinked{AccountID: account, StripeCustomerID: customer})
	}
	first, second := link("acc_a", "cus_1"), link("acc_b", "cus_1")
	// Delivered out of the global order (two partitions): the first link
	// in the global order still wins.
	handleAll(t, s, second...)
	handleAll(t, s, first...)
	handleAll(t, s, link("acc_c", "cus_2")...)
	links := records.CustomerLinks{Q: pool}
	for cus, want := range map[string]string{"cus_1": "acc_a", "cus_2": "acc_c", "cus_none": ""} {
		if got, err := links.AccountForCustomer(ctx, cus); err != nil || got != want {
			t.Errorf("account for %s = %q, %v; want %q", cus, got, err, want)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM billing_customers`).Scan(&n); err != nil || n != 3 {
		t.Errorf("billing_customers rows = %d, %v; want 3", n, err)
	}

	// Kept inline, a link is found the moment it is stored; the Set
	// applying it again later changes nothing.
	inline, err := pgstore.New(pool, nil, records.CustomerLinksInline{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.New(events.StreamAccount+"acc_d", events.BillingCustomerLinked{AccountID: "acc_d", StripeCustomerID: "cus_3"},
		events.Metadata{AccountID: "acc_d", Actor: "test"}, day0, "")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := inline.Append(ctx, events.StreamAccount+"acc_d", 0, e)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := links.AccountForCustomer(ctx, "cus_3"); err != nil || got != "acc_d" {
		t.Errorf("account for cus_3 stored inline = %q, %v; want acc_d", got, err)
	}
	// A later link of the same customer, applied inline, does not win.
	later, err := events.New(events.StreamAccount+"acc_e", events.BillingCustomerLinked{AccountID: "acc_e", StripeCustomerID: "cus_3"},
		events.Metadata{AccountID: "acc_e", Actor: "test"}, day0, "")
	if err != nil {
		t.Fatal(err)
	}
	stored2, err := inline.Append(ctx, events.StreamAccount+"acc_e", 0, later)
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, pool, projections.LiveSchema)
	handleAll(t, s, append(stored2, stored...)...)
	if after := dump(t, pool, projections.LiveSchema); !reflect.DeepEqual(before["billing_customer_links"], after["billing_customer_links"]) ||
		!reflect.DeepEqual(before["billing_customers"], after["billing_customers"]) {
		t.Errorf("the Set changed the inline links:\nbefore %v\nafter  %v", before, after)
	}
	if got, _ := links.AccountForCustomer(ctx, "cus_3"); got != "acc_d" {
		t.Errorf("account for cus_3 = %q; want acc_d, the first link", got)
	}
}

func TestDunningCandidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	s := newSet(t, pool, projections.LiveSchema)
	grace := day0.Add(72 * time.Hour)
	failed := func(account string, until time.Time) {
		handleAll(t, s, l.Append(events.StreamAccount+account, account, day0, events.BillingPaymentFailed{
			AccountID: account, StripeCustomerID: "cus_" + account, InvoiceID: "in_1", GraceUntil: until, StripeEventID: "evt_f", StripeCreated: day0})...)
	}
	failed("acc_late", grace)
	failed("acc_late", grace.Add(time.Hour)) // a retry of the invoice: the earliest grace counts
	failed("acc_paid", grace)
	handleAll(t, s, l.Append(events.StreamAccount+"acc_paid", "acc_paid", day0, events.BillingPaymentSucceeded{
		AccountID: "acc_paid", StripeCustomerID: "cus_acc_paid", InvoiceID: "in_1", StripeEventID: "evt_p", StripeCreated: day0})...)
	failed("acc_down", grace)
	handleAll(t, s, l.Append(events.StreamAccount+"acc_down", "acc_down", day0, events.AccountDowngraded{
		AccountID: "acc_down", FromPlan: "pro", ToPlan: "free", GraceUntil: grace})...)
	failed("acc_later", grace.Add(24*time.Hour))

	for _, tc := range []struct {
		at   time.Time
		want []string
	}{
		{grace.Add(-time.Second), nil},
		{grace, []string{"acc_late"}},
		{grace.Add(24 * time.Hour), []string{"acc_late", "acc_later"}},
	} {
		got, err := records.DunningCandidates(ctx, pool, tc.at)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("candidates at %s = %v, %v; want %v", tc.at, got, err, tc.want)
		}
	}
	// Failed again after the downgrade: a candidate again (DecideDowngrade
	// then finds it downgraded already).
	failed("acc_down", grace)
	if got, _ := records.DunningCandidates(ctx, pool, grace); !slices.Contains(got, "acc_down") {
		t.Errorf("candidates = %v; want acc_down again", got)
	}
}
