package events_test

import (
	"time"

	"github.com/tollgate/tollgate/events"
)

var billingAt = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

var billingExamples = []events.Data{
	events.BillingWebhookReceived{
		StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXWy", StripeEventType: "customer.subscription.updated",
		StripeCreated: billingAt, APIVersion: "2023-10-16", Livemode: true,
		AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", Outcome: events.WebhookApplied,
	},
	events.BillingSubscriptionChanged{
		AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", SubscriptionID: "sub_1MowQVLkdIwHu7ix",
		Status: "active", Plan: "pro", StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXWy", StripeCreated: billingAt,
	},
	events.BillingPaymentFailed{
		AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", InvoiceID: "in_1MtHbELkdIwHu7ix",
		GraceUntil: billingAt.Add(72 * time.Hour), StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXWz", StripeCreated: billingAt,
	},
	events.BillingPaymentSucceeded{
		AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", InvoiceID: "in_1MtHbELkdIwHu7ix",
		StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXX0", StripeCreated: billingAt,
	},
	events.AccountDowngraded{AccountID: "acc_1", FromPlan: "pro", ToPlan: "free", GraceUntil: billingAt},
	events.BillingRecordFlagged{RecordID: "br_0a1b2c", AccountID: "acc_1", WindowStart: billingAt, Quantity: 1234, Reason: events.FlagTooOld},
}
