package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tollgate/tollgate/events"
)

// e2eWebhookSecret is the Stripe endpoint's signing secret of the e2e
// server (STRIPE_WEBHOOK_SECRET).
const e2eWebhookSecret = "whsec_e2e_tollgate"

// stripeEvent builds a Stripe event body rendered now.
func stripeEvent(id, typ string, object map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "object": "event", "type": typ, "api_version": "2023-10-16",
		"created": time.Now().Unix(), "livemode": false, "pending_webhooks": 1, "data": map[string]any{"object": object}})
	return b
}

// deliver posts a Stripe event signed as Stripe does, with no API key.
func (e *env) deliver(body []byte) map[string]any {
	e.t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: e2eWebhookSecret, Timestamp: time.Now()})
	code, out, _ := e.do("POST", "/v1/webhooks/stripe", "", sp.Payload, "Stripe-Signature", sp.Header)
	if code != http.StatusOK {
		e.t.Fatalf("webhook %s: %d %v", body, code, out)
	}
	return out
}

// chat asks for model with key and returns the status and error code.
func (e *env) chat(key, model string) (int, string, string) {
	e.t.Helper()
	code, out, _ := e.do("POST", "/v1/chat/completions", key, map[string]any{
		"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}},
	})
	if errObj, ok := out["error"].(map[string]any); ok {
		c, _ := errObj["code"].(string)
		m, _ := errObj["message"].(string)
		return code, c, m
	}
	return code, "", ""
}

// TestEndToEndBillingLifecycle: checkout over the HTTP API, then signed
// webhooks take the account to pro, a failed payment downgrades it to the
// fallback plan after the grace period (a pro-only model is refused), and
// a paid invoice restores it.
func TestEndToEndBillingLifecycle(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	code, acc, _ := e.do("POST", "/v1/admin/accounts", e.admin, map[string]string{"name": "Billed", "email": "billing@acme.test", "plan": "basic"})
	if code != http.StatusCreated {
		t.Fatalf("create account: %d %v", code, acc)
	}
	accountID := acc["id"].(string)
	code, key, _ := e.do("POST", "/v1/admin/accounts/"+accountID+"/keys", e.admin, map[string]string{"name": "billing"})
	if code != http.StatusCreated {
		t.Fatalf("issue key: %d %v", code, key)
	}
	secret := key["key"].(string)

	// gpt-fallback is outside the basic plan.
	if code, errCode, _ := e.chat(secret, "gpt-fallback"); code != http.StatusForbidden || errCode != "model_not_in_plan" {
		t.Fatalf("gpt-fallback on basic: %d %s", code, errCode)
	}

	// Checkout through the HTTP API (no SDK): a Stripe customer is created and linked.
	code, co, _ := e.do("POST", "/v1/billing/checkout", secret, map[string]string{"plan": "pro"})
	if code != http.StatusOK || co["url"] == "" {
		t.Fatalf("checkout: %d %v", code, co)
	}
	cus := co["customer"].(string)
	if s := e.stripe.RequestsTo("POST", "/v1/checkout/sessions"); len(s) != 1 || s[0].Form.Get("line_items[0][price]") != "price_e2e_pro" ||
		s[0].Form.Get("line_items[1][price]") != "price_e2e_pro_tokens" || s[0].Form.Get("customer") != cus {
		t.Fatalf("checkout sessions at Stripe: %+v", s)
	}

	e.deliver(stripeEvent("evt_e2eCheckout", "checkout.session.completed", map[string]any{
		"id": "cs_e2e", "object": "checkout.session", "mode": "subscription", "customer": cus, "subscription": "sub_e2e",
		"client_reference_id": accountID, "metadata": map[string]string{"account_id": accountID, "plan": "pro"},
	}))
	sub := func(status string) map[string]any {
		return map[string]any{"id": "sub_e2e", "object": "subscription", "customer": cus, "status": status, "metadata": map[string]string{},
			"items": map[string]any{"object": "list", "data": []any{
				map[string]any{"object": "subscription_item", "price": map[string]any{"id": "price_e2e_pro", "object": "price"}},
				map[string]any{"object": "subscription_item", "price": map[string]any{"id": "price_e2e_pro_tokens", "object": "price"}},
			}}}
	}
	if out := e.deliver(stripeEvent("evt_e2eSubUpdated", "customer.subscription.updated", sub("active"))); out["outcome"] != events.WebhookApplied {
		t.Fatalf("subscription.updated: %v", out)
	}
	// Pro: the pro-only model is served (within the key cache's second).
	eventually(t, "pro model served on pro", func() error {
		if code, errCode, msg := e.chat(secret, "gpt-fallback"); code != http.StatusOK {
			return fmt.Errorf("%d %s %s", code, errCode, msg)
		}
		return nil
	})

	// Payment fails: the plan holds through the grace period (2s), then the
	// bill role's dunning downgrades to the fallback plan.
	invoice := map[string]any{"id": "in_e2e", "object": "invoice", "customer": cus, "subscription": "sub_e2e"}
	e.deliver(stripeEvent("evt_e2eFailed", "invoice.payment_failed", invoice))
	eventually(t, "downgraded after the grace period", func() error {
		code, errCode, msg := e.chat(secret, "gpt-fallback")
		if code != http.StatusForbidden || errCode != "model_not_in_plan" {
			return fmt.Errorf("gpt-fallback: %d %s", code, errCode)
		}
		if !strings.Contains(msg, "`basic`") {
			return fmt.Errorf("message does not name the plan: %q", msg)
		}
		return nil
	})
	if code, errCode, _ := e.chat(secret, "echo"); code != http.StatusOK {
		t.Fatalf("fallback plan's model after the downgrade: %d %s", code, errCode)
	}

	// Paid: restored.
	e.deliver(stripeEvent("evt_e2ePaid", "invoice.paid", invoice))
	eventually(t, "restored after invoice.paid", func() error {
		if code, errCode, msg := e.chat(secret, "gpt-fallback"); code != http.StatusOK {
			return fmt.Errorf("%d %s %s", code, errCode, msg)
		}
		return nil
	})

	// The account's stream tells the story, and every event matches its schema.
	var story []string
	types := map[string]bool{}
	for _, ev := range allEvents(t, e) {
		types[ev.Type] = true
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.validate.Validate(ev.Type, ev.SchemaVersion, raw, ev.Data); err != nil {
			t.Errorf("event %s %s: %v", ev.Type, ev.EventID, err)
		}
		if ev.StreamID == "account-"+accountID && ev.Type != events.TypeBillingWebhookReceived {
			story = append(story, ev.Type)
		}
	}
	want := []string{events.TypeAccountCreated, events.TypeBillingCustomerLinked,
		events.TypeBillingSubscriptionChanged, events.TypeBillingSubscriptionChanged,
		events.TypeBillingPaymentFailed, events.TypeAccountDowngraded, events.TypeBillingPaymentSucceeded}
	if strings.Join(story, ",") != strings.Join(want, ",") {
		t.Errorf("account stream %v\nwant %v", story, want)
	}
	for _, w := range []string{events.TypeBillingWebhookReceived, events.TypeCompletionSucceeded} {
		if !types[w] {
			t.Errorf("no %s event was produced", w)
		}
	}
}
