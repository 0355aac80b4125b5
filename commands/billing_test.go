package commands_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
)

const cus = "cus_Acme1"

var (
	b0     = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	policy = commands.BillingPolicy{
		PlanForPrice: func(p string) (string, bool) {
			switch p {
			case "price_pro", "price_pro_metered":
				return "pro", true
			case "price_team":
				return "team", true
			}
			return "", false
		},
		PlanExists:   func(p string) bool { return p == "free" || p == "pro" || p == "team" },
		FallbackPlan: "free",
		GracePeriod:  72 * time.Hour,
	}
	freeAccount = events.AccountCreated{AccountID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "free"}
	linked      = events.BillingCustomerLinked{AccountID: "acc_1", StripeCustomerID: cus}
)

func stripeEv(id, typ string, at time.Time, f func(*commands.StripeEvent)) commands.StripeEvent {
	e := commands.StripeEvent{ID: id, Type: typ, Created: at, APIVersion: "2023-10-16", CustomerID: cus}
	if f != nil {
		f(&e)
	}
	return e
}

func receipt(ev commands.StripeEvent, outcome string) events.BillingWebhookReceived {
	return events.BillingWebhookReceived{StripeEventID: ev.ID, StripeEventType: ev.Type, StripeCreated: ev.Created,
		APIVersion: ev.APIVersion, AccountID: "acc_1", StripeCustomerID: ev.CustomerID, Outcome: outcome}
}

func subChanged(ev commands.StripeEvent, status, plan string) events.BillingSubscriptionChanged {
	return events.BillingSubscriptionChanged{AccountID: "acc_1", StripeCustomerID: cus, SubscriptionID: "sub_1",
		Status: status, Plan: plan, StripeEventID: ev.ID, StripeCreated: ev.Created}
}

func TestDecideStripeEvent(t *testing.T) {
	decide := func(ev commands.StripeEvent) func(commands.Account) ([]events.Data, error) {
		return func(a commands.Account) ([]events.Data, error) { return commands.DecideStripeEvent(a, ev, policy) }
	}
	checkout := stripeEv("evt_checkout", commands.StripeCheckoutCompleted, b0, func(e *commands.StripeEvent) {
		e.SubscriptionID, e.Plan = "sub_1", "pro"
	})
	subUpdated := func(id string, at time.Time, status string, prices ...string) commands.StripeEvent {
		return stripeEv(id, commands.StripeSubscriptionUpdated, at, func(e *commands.StripeEvent) {
			e.SubscriptionID, e.Status, e.PriceIDs = "sub_1", status, prices
		})
	}
	toTeam := subUpdated("evt_team", b0.Add(2*time.Hour), "active", "price_team")
	toPro := subUpdated("evt_pro", b0.Add(time.Hour), "active", "price_pro", "price_pro_metered")
	deleted := stripeEv("evt_del", commands.StripeSubscriptionDeleted, b0.Add(3*time.Hour), func(e *commands.StripeEvent) {
		e.SubscriptionID, e.Status = "sub_1", "canceled"
	})
	deletedOther := stripeEv("evt_del0", commands.StripeSubscriptionDeleted, b0.Add(3*time.Hour), func(e *commands.StripeEvent) {
		e.SubscriptionID, e.Status = "sub_0", "canceled"
	})
	failed := stripeEv("evt_fail", commands.StripeInvoicePaymentFailed, b0.Add(24*time.Hour), func(e *commands.StripeEvent) { e.InvoiceID = "in_1" })
	failedAgain := stripeEv("evt_fail2", commands.StripeInvoicePaymentFailed, b0.Add(48*time.Hour), func(e *commands.StripeEvent) { e.InvoiceID = "in_1" })
	paid := stripeEv("evt_paid", commands.StripeInvoicePaid, b0.Add(30*time.Hour), func(e *commands.StripeEvent) { e.InvoiceID = "in_1" })
	unknown := stripeEv("evt_unknown", "customer.tax_id.created", b0, nil)
	other := stripeEv("evt_other", commands.StripeSubscriptionUpdated, b0, func(e *commands.StripeEvent) {
		e.CustomerID, e.SubscriptionID, e.Status, e.PriceIDs = "cus_Other", "sub_9", "active", []string{"price_team"}
	})
	unknownPrice := subUpdated("evt_price", b0.Add(time.Hour), "active", "price_elsewhere")

	afterCheckout := []events.Data{freeAccount, linked, receipt(checkout, events.WebhookApplied), subChanged(checkout, "active", "pro")}
	firstFailure := events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1",
		GraceUntil: failed.Created.Add(72 * time.Hour), StripeEventID: failed.ID, StripeCreated: failed.Created}

	run(t, commands.AccountStream("acc_1"), commands.FoldAccount, []gwt[commands.Account]{
		{
			name: "checkout completed links the customer and activates the plan", given: []events.Data{freeAccount},
			when: decide(checkout),
			then: []events.Data{receipt(checkout, events.WebhookApplied), linked, subChanged(checkout, "active", "pro")},
		},
		{
			name: "subscription updated changes plan by price", given: afterCheckout, when: decide(toTeam),
			then: []events.Data{receipt(toTeam, events.WebhookApplied), subChanged(toTeam, "active", "team")},
		},
		{
			name:  "stale subscription update is recorded and ignored",
			given: append(append([]events.Data{}, afterCheckout...), receipt(toTeam, events.WebhookApplied), subChanged(toTeam, "active", "team")),
			when:  decide(toPro), then: []events.Data{receipt(toPro, events.WebhookStale)},
		},
		{
			name: "subscription deleted falls back", given: afterCheckout, when: decide(deleted),
			then: []events.Data{receipt(deleted, events.WebhookApplied), subChanged(deleted, "canceled", "free")},
		},
		{
			name: "deletion of an older subscription is ignored", given: afterCheckout, when: decide(deletedOther),
			then: []events.Data{receipt(deletedOther, events.WebhookIgnored)},
		},
		{
			name: "another customer's object is ignored", given: afterCheckout, when: decide(other),
			then: []events.Data{func() events.BillingWebhookReceived { r := receipt(other, events.WebhookIgnored); return r }()},
		},
		{
			name: "an unconfigured price is ignored", given: afterCheckout, when: decide(unknownPrice),
			then: []events.Data{receipt(unknownPrice, events.WebhookIgnored)},
		},
		{
			name: "payment failed starts the grace period", given: afterCheckout, when: decide(failed),
			then: []events.Data{receipt(failed, events.WebhookApplied), firstFailure},
		},
		{
			name: "a retried failure keeps the first grace period", given: append(append([]events.Data{}, afterCheckout...), firstFailure),
			when: decide(failedAgain),
			then: []events.Data{receipt(failedAgain, events.WebhookApplied), events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus,
				InvoiceID: "in_1", GraceUntil: firstFailure.GraceUntil, StripeEventID: failedAgain.ID, StripeCreated: failedAgain.Created}},
		},
		{
			name: "invoice paid restores", given: append(append([]events.Data{}, afterCheckout...), firstFailure), when: decide(paid),
			then: []events.Data{receipt(paid, events.WebhookApplied), events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus,
				InvoiceID: "in_1", StripeEventID: paid.ID, StripeCreated: paid.Created}},
		},
		{
			name: "a failure older than the payment is stale",
			given: append(append([]events.Data{}, afterCheckout...), events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus,
				InvoiceID: "in_1", StripeEventID: paid.ID, StripeCreated: paid.Created}),
			when: decide(failed), then: []events.Data{receipt(failed, events.WebhookStale)},
		},
		{
			name: "unknown types are recorded", given: afterCheckout, when: decide(unknown),
			then: []events.Data{receipt(unknown, events.WebhookUnhandled)},
		},
		{name: "no account", when: decide(checkout), err: commands.ErrNotFound},
		{
			name: "bad customer id", given: []events.Data{freeAccount},
			when: decide(stripeEv("evt_bad", commands.StripeInvoicePaid, b0, func(e *commands.StripeEvent) { e.CustomerID = "acct_1" })),
			err:  commands.ErrInvalid, field: "customer",
		},
	})
}

func TestDecideDowngrade(t *testing.T) {
	grace := b0.Add(72 * time.Hour)
	failure := events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1", GraceUntil: grace, StripeEventID: "evt_f", StripeCreated: b0}
	pro := events.BillingSubscriptionChanged{AccountID: "acc_1", StripeCustomerID: cus, SubscriptionID: "sub_1", Status: "active", Plan: "pro", StripeEventID: "evt_c", StripeCreated: b0}
	down := events.AccountDowngraded{AccountID: "acc_1", FromPlan: "pro", ToPlan: "free", GraceUntil: grace}
	at := func(now time.Time) func(commands.Account) ([]events.Data, error) {
		return func(a commands.Account) ([]events.Data, error) { return commands.DecideDowngrade(a, now, "free") }
	}
	run(t, commands.AccountStream("acc_1"), commands.FoldAccount, []gwt[commands.Account]{
		{name: "within grace nothing happens", given: []events.Data{freeAccount, linked, pro, failure}, when: at(grace.Add(-time.Second))},
		{name: "grace ended downgrades", given: []events.Data{freeAccount, linked, pro, failure}, when: at(grace), then: []events.Data{down}},
		{name: "downgraded once", given: []events.Data{freeAccount, linked, pro, failure, down}, when: at(grace.Add(time.Hour))},
		{
			name: "paid before the end: nothing", when: at(grace.Add(time.Hour)),
			given: []events.Data{freeAccount, linked, pro, failure, events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1", StripeEventID: "evt_p", StripeCreated: b0.Add(time.Hour)}},
		},
		{name: "no failure: nothing", given: []events.Data{freeAccount, linked, pro}, when: at(grace.Add(time.Hour))},
		{name: "no account", when: at(grace), err: commands.ErrNotFound},
	})
}

func TestDecideLinkCustomer(t *testing.T) {
	link := func(c string) func(commands.Account) ([]events.Data, error) {
		return func(a commands.Account) ([]events.Data, error) { return commands.DecideLinkCustomer(a, c) }
	}
	run(t, commands.AccountStream("acc_1"), commands.FoldAccount, []gwt[commands.Account]{
		{name: "first link", given: []events.Data{freeAccount}, when: link(cus), then: []events.Data{linked}},
		{name: "same customer again is a no-op", given: []events.Data{freeAccount, linked}, when: link(cus)},
		{name: "another customer is refused", given: []events.Data{freeAccount, linked}, when: link("cus_Other"), err: commands.ErrWrongState},
		{name: "not a customer id", given: []events.Data{freeAccount}, when: link("acct_1"), err: commands.ErrInvalid, field: "stripe_customer_id"},
		{name: "no account", when: link(cus), err: commands.ErrNotFound},
	})
}

func TestFoldAccountBillingLifecycle(t *testing.T) {
	grace := b0.Add(72 * time.Hour)
	pro := events.BillingSubscriptionChanged{AccountID: "acc_1", StripeCustomerID: cus, SubscriptionID: "sub_1", Status: "active", Plan: "pro", StripeEventID: "evt_c", StripeCreated: b0}
	failure := events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1", GraceUntil: grace, StripeEventID: "evt_f", StripeCreated: b0}
	down := events.AccountDowngraded{AccountID: "acc_1", FromPlan: "pro", ToPlan: "free", GraceUntil: grace}
	paid := events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1", StripeEventID: "evt_p", StripeCreated: grace.Add(time.Hour)}
	for _, tc := range []struct {
		given []events.Data
		plan  string
	}{
		{[]events.Data{freeAccount}, "free"},
		{[]events.Data{freeAccount, linked, pro}, "pro"},
		{[]events.Data{freeAccount, linked, pro, failure}, "pro"},
		{[]events.Data{freeAccount, linked, pro, failure, down}, "free"},
		{[]events.Data{freeAccount, linked, pro, failure, down, paid}, "pro"},
	} {
		a, err := commands.FoldAccount(history(t, "account-acc_1", tc.given...))
		if err != nil {
			t.Fatal(err)
		}
		if got := a.EffectivePlan(); got != tc.plan {
			t.Errorf("after %d events EffectivePlan = %q, want %q (%+v)", len(tc.given), got, tc.plan, a.Billing)
		}
	}
}
