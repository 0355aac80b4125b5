package billing_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

const cus = "cus_Acme1"

var (
	b0     = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	policy = billing.BillingPolicy{
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

func stripeEv(id, typ string, at time.Time, f func(*billing.StripeEvent)) billing.StripeEvent {
	e := billing.StripeEvent{ID: id, Type: typ, Created: at, APIVersion: "2023-10-16", CustomerID: cus}
	if f != nil {
		f(&e)
	}
	return e
}

func receipt(ev billing.StripeEvent, outcome string) events.BillingWebhookReceived {
	return events.BillingWebhookReceived{StripeEventID: ev.ID, StripeEventType: ev.Type, StripeCreated: ev.Created,
		APIVersion: ev.APIVersion, AccountID: "acc_1", StripeCustomerID: ev.CustomerID, Outcome: outcome}
}

func subChanged(ev billing.StripeEvent, status, plan string) events.BillingSubscriptionChanged {
	return events.BillingSubscriptionChanged{AccountID: "acc_1", StripeCustomerID: cus, SubscriptionID: "sub_1",
		Status: status, Plan: plan, StripeEventID: ev.ID, StripeCreated: ev.Created}
}

func TestDecideStripeEvent(t *testing.T) {
	t.Parallel()
	decide := func(ev billing.StripeEvent) func(account.Account) ([]events.Data, error) {
		return func(a account.Account) ([]events.Data, error) { return billing.DecideStripeEvent(a, ev, policy) }
	}
	checkout := stripeEv("evt_checkout", billing.StripeCheckoutCompleted, b0, func(e *billing.StripeEvent) {
		e.SubscriptionID, e.Plan = "sub_1", "pro"
	})
	subUpdated := func(id string, at time.Time, status string, prices ...string) billing.StripeEvent {
		return stripeEv(id, billing.StripeSubscriptionUpdated, at, func(e *billing.StripeEvent) {
			e.SubscriptionID, e.Status, e.PriceIDs = "sub_1", status, prices
		})
	}
	toTeam := subUpdated("evt_team", b0.Add(2*time.Hour), "active", "price_team")
	toPro := subUpdated("evt_pro", b0.Add(time.Hour), "active", "price_pro", "price_pro_metered")
	deleted := stripeEv("evt_del", billing.StripeSubscriptionDeleted, b0.Add(3*time.Hour), func(e *billing.StripeEvent) {
		e.SubscriptionID, e.Status = "sub_1", "canceled"
	})
	deletedOther := stripeEv("evt_del0", billing.StripeSubscriptionDeleted, b0.Add(3*time.Hour), func(e *billing.StripeEvent) {
		e.SubscriptionID, e.Status = "sub_0", "canceled"
	})
	failed := stripeEv("evt_fail", billing.StripeInvoicePaymentFailed, b0.Add(24*time.Hour), func(e *billing.StripeEvent) { e.InvoiceID = "in_1" })
	failedAgain := stripeEv("evt_fail2", billing.StripeInvoicePaymentFailed, b0.Add(48*time.Hour), func(e *billing.StripeEvent) { e.InvoiceID = "in_1" })
	paid := stripeEv("evt_paid", billing.StripeInvoicePaid, b0.Add(30*time.Hour), func(e *billing.StripeEvent) { e.InvoiceID = "in_1" })
	unknown := stripeEv("evt_unknown", "customer.tax_id.created", b0, nil)
	other := stripeEv("evt_other", billing.StripeSubscriptionUpdated, b0, func(e *billing.StripeEvent) {
		e.CustomerID, e.SubscriptionID, e.Status, e.PriceIDs = "cus_Other", "sub_9", "active", []string{"price_team"}
	})
	unknownPrice := subUpdated("evt_price", b0.Add(time.Hour), "active", "price_elsewhere")

	afterCheckout := []events.Data{freeAccount, linked, receipt(checkout, events.WebhookApplied), subChanged(checkout, "active", "pro")}
	firstFailure := events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1",
		GraceUntil: failed.Created.Add(72 * time.Hour), StripeEventID: failed.ID, StripeCreated: failed.Created}

	decidetest.Run(t, account.AccountStream("acc_1"), account.FoldAccount, []decidetest.Case[account.Account]{
		{
			Name: "checkout completed links the customer and activates the plan", Given: []events.Data{freeAccount},
			When: decide(checkout),
			Then: []events.Data{receipt(checkout, events.WebhookApplied), linked, subChanged(checkout, "active", "pro")},
		},
		{
			Name: "subscription updated changes plan by price", Given: afterCheckout, When: decide(toTeam),
			Then: []events.Data{receipt(toTeam, events.WebhookApplied), subChanged(toTeam, "active", "team")},
		},
		{
			Name:  "stale subscription update is recorded and ignored",
			Given: append(append([]events.Data{}, afterCheckout...), receipt(toTeam, events.WebhookApplied), subChanged(toTeam, "active", "team")),
			When:  decide(toPro), Then: []events.Data{receipt(toPro, events.WebhookStale)},
		},
		{
			Name: "subscription deleted falls back", Given: afterCheckout, When: decide(deleted),
			Then: []events.Data{receipt(deleted, events.WebhookApplied), subChanged(deleted, "canceled", "free")},
		},
		{
			Name: "deletion of an older subscription is ignored", Given: afterCheckout, When: decide(deletedOther),
			Then: []events.Data{receipt(deletedOther, events.WebhookIgnored)},
		},
		{
			Name: "another customer's object is ignored", Given: afterCheckout, When: decide(other),
			Then: []events.Data{func() events.BillingWebhookReceived { r := receipt(other, events.WebhookIgnored); return r }()},
		},
		{
			Name: "an unconfigured price is ignored", Given: afterCheckout, When: decide(unknownPrice),
			Then: []events.Data{receipt(unknownPrice, events.WebhookIgnored)},
		},
		{
			Name: "payment failed starts the grace period", Given: afterCheckout, When: decide(failed),
			Then: []events.Data{receipt(failed, events.WebhookApplied), firstFailure},
		},
		{
			Name: "a retried failure keeps the first grace period", Given: append(append([]events.Data{}, afterCheckout...), firstFailure),
			When: decide(failedAgain),
			Then: []events.Data{receipt(failedAgain, events.WebhookApplied), events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus,
				InvoiceID: "in_1", GraceUntil: firstFailure.GraceUntil, StripeEventID: failedAgain.ID, StripeCreated: failedAgain.Created}},
		},
		{
			Name: "invoice paid restores", Given: append(append([]events.Data{}, afterCheckout...), firstFailure), When: decide(paid),
			Then: []events.Data{receipt(paid, events.WebhookApplied), events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus,
				InvoiceID: "in_1", StripeEventID: paid.ID, StripeCreated: paid.Created}},
		},
		{
			Name: "a failure older than the payment is stale",
			Given: append(append([]events.Data{}, afterCheckout...), events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus,
				InvoiceID: "in_1", StripeEventID: paid.ID, StripeCreated: paid.Created}),
			When: decide(failed), Then: []events.Data{receipt(failed, events.WebhookStale)},
		},
		{
			Name: "unknown types are recorded", Given: afterCheckout, When: decide(unknown),
			Then: []events.Data{receipt(unknown, events.WebhookUnhandled)},
		},
		{Name: "no account", When: decide(checkout), Err: domainerr.ErrNotFound},
		{
			Name: "bad customer id", Given: []events.Data{freeAccount},
			When: decide(stripeEv("evt_bad", billing.StripeInvoicePaid, b0, func(e *billing.StripeEvent) { e.CustomerID = "acct_1" })),
			Err:  domainerr.ErrInvalid, Field: "customer",
		},
	})
}

func TestDecideDowngrade(t *testing.T) {
	t.Parallel()
	grace := b0.Add(72 * time.Hour)
	failure := events.BillingPaymentFailed{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1", GraceUntil: grace, StripeEventID: "evt_f", StripeCreated: b0}
	pro := events.BillingSubscriptionChanged{AccountID: "acc_1", StripeCustomerID: cus, SubscriptionID: "sub_1", Status: "active", Plan: "pro", StripeEventID: "evt_c", StripeCreated: b0}
	down := events.AccountDowngraded{AccountID: "acc_1", FromPlan: "pro", ToPlan: "free", GraceUntil: grace}
	at := func(now time.Time) func(account.Account) ([]events.Data, error) {
		return func(a account.Account) ([]events.Data, error) { return billing.DecideDowngrade(a, now, "free") }
	}
	decidetest.Run(t, account.AccountStream("acc_1"), account.FoldAccount, []decidetest.Case[account.Account]{
		{Name: "within grace nothing happens", Given: []events.Data{freeAccount, linked, pro, failure}, When: at(grace.Add(-time.Second))},
		{Name: "grace ended downgrades", Given: []events.Data{freeAccount, linked, pro, failure}, When: at(grace), Then: []events.Data{down}},
		{Name: "downgraded once", Given: []events.Data{freeAccount, linked, pro, failure, down}, When: at(grace.Add(time.Hour))},
		{
			Name: "paid before the end: nothing", When: at(grace.Add(time.Hour)),
			Given: []events.Data{freeAccount, linked, pro, failure, events.BillingPaymentSucceeded{AccountID: "acc_1", StripeCustomerID: cus, InvoiceID: "in_1", StripeEventID: "evt_p", StripeCreated: b0.Add(time.Hour)}},
		},
		{Name: "no failure: nothing", Given: []events.Data{freeAccount, linked, pro}, When: at(grace.Add(time.Hour))},
		{Name: "no account", When: at(grace), Err: domainerr.ErrNotFound},
	})
}

func TestDecideLinkCustomer(t *testing.T) {
	t.Parallel()
	link := func(c string) func(account.Account) ([]events.Data, error) {
		return func(a account.Account) ([]events.Data, error) { return billing.DecideLinkCustomer(a, c) }
	}
	decidetest.Run(t, account.AccountStream("acc_1"), account.FoldAccount, []decidetest.Case[account.Account]{
		{Name: "first link", Given: []events.Data{freeAccount}, When: link(cus), Then: []events.Data{linked}},
		{Name: "same customer again is a no-op", Given: []events.Data{freeAccount, linked}, When: link(cus)},
		{Name: "another customer is refused", Given: []events.Data{freeAccount, linked}, When: link("cus_Other"), Err: domainerr.ErrWrongState},
		{Name: "not a customer id", Given: []events.Data{freeAccount}, When: link("acct_1"), Err: domainerr.ErrInvalid, Field: "stripe_customer_id"},
		{Name: "no account", When: link(cus), Err: domainerr.ErrNotFound},
	})
}

func TestFoldAccountBillingLifecycle(t *testing.T) {
	t.Parallel()
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
		a, err := account.FoldAccount(decidetest.History(t, "account-acc_1", tc.given...))
		if err != nil {
			t.Fatal(err)
		}
		if got := a.EffectivePlan(); got != tc.plan {
			t.Errorf("after %d events EffectivePlan = %q, want %q (%+v)", len(tc.given), got, tc.plan, a.Billing)
		}
	}
}
