package schemas_test

import (
	"time"

	"github.com/tollgate/tollgate/events"
)

// billingExamples returns one valid event of each of the area's types.
func billingExamples() map[string]example {
	at := exampleTime()
	return map[string]example{
		events.TypeBillingWebhookReceived: {"stripeevent-evt_1NG8Du2eZvKYlo2CUI79vXWy", events.BillingWebhookReceived{
			StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXWy", StripeEventType: "customer.created",
			StripeCreated: at, APIVersion: "2023-10-16", Outcome: events.WebhookUnhandled,
		}},
		events.TypeBillingSubscriptionChanged: {"account-acc_1", events.BillingSubscriptionChanged{
			AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", SubscriptionID: "sub_1MowQVLkdIwHu7ix",
			Status: "active", Plan: "pro", StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXWy", StripeCreated: at,
		}},
		events.TypeBillingPaymentFailed: {"account-acc_1", events.BillingPaymentFailed{
			AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", InvoiceID: "in_1MtHbELkdIwHu7ix",
			GraceUntil: at.Add(72 * time.Hour), StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXWz", StripeCreated: at,
		}},
		events.TypeBillingPaymentSucceeded: {"account-acc_1", events.BillingPaymentSucceeded{
			AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", InvoiceID: "in_1MtHbELkdIwHu7ix",
			StripeEventID: "evt_1NG8Du2eZvKYlo2CUI79vXX0", StripeCreated: at,
		}},
		events.TypeAccountDowngraded: {"account-acc_1", events.AccountDowngraded{
			AccountID: "acc_1", FromPlan: "pro", ToPlan: "free", GraceUntil: at,
		}},
		events.TypeBillingRecordFlagged: {"billingrecord-br_0a1b2c", events.BillingRecordFlagged{
			RecordID: "br_0a1b2c", AccountID: "acc_1", WindowStart: at, Quantity: 1234, Reason: events.FlagTooOld,
		}},
	}
}
