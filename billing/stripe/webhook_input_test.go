package stripe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"
)

const inputTestSecret = "whsec_webhook_input_test"

// stripeSign computes a Stripe-Signature header the way Stripe documents
// it: v1 is the hex HMAC-SHA256, keyed with the endpoint secret, of
// "<t>.<payload>" (https://docs.stripe.com/webhooks#verify-manually).
func stripeSign(payload []byte, secret string, t int64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(t, 10) + "." + string(payload)))
	return fmt.Sprintf("t=%d,v1=%s", t, hex.EncodeToString(mac.Sum(nil)))
}

func inputTestEvent(created int64) []byte {
	return []byte(fmt.Sprintf(`{"id":"evt_InputTest1","object":"event","type":"product.created","api_version":"2023-10-16","created":%d,"livemode":false,"data":{"object":{"id":"prod_1","object":"product"}}}`, created))
}

func TestSignaturesDatedInTheFutureBeyondTheToleranceAreRefused(t *testing.T) {
	t.Parallel()
	const tolerance = 5 * time.Minute
	now := time.Now()
	payload := inputTestEvent(now.Unix())
	for _, c := range []struct {
		name   string
		header string
		ok     bool
	}{
		{"now", stripeSign(payload, inputTestSecret, now.Unix()), true},
		{"a minute old", stripeSign(payload, inputTestSecret, now.Add(-time.Minute).Unix()), true},
		{"a minute ahead (clock skew)", stripeSign(payload, inputTestSecret, now.Add(time.Minute).Unix()), true},
		{"just within the tolerance ahead", stripeSign(payload, inputTestSecret, now.Add(tolerance-time.Second).Unix()), true},
		{"just beyond the tolerance ahead", stripeSign(payload, inputTestSecret, now.Add(tolerance+2*time.Second).Unix()), false},
		{"an hour ahead", stripeSign(payload, inputTestSecret, now.Add(time.Hour).Unix()), false},
		{"a year ahead", stripeSign(payload, inputTestSecret, now.AddDate(1, 0, 0).Unix()), false},
		{"at the int64 limit", stripeSign(payload, inputTestSecret, 1<<63-1), false},
		{"beyond the tolerance in the past", stripeSign(payload, inputTestSecret, now.Add(-tolerance-2*time.Second).Unix()), false},
		// stripe-go verifies against the last t=; so does the future check.
		{"a current t= before a future one", fmt.Sprintf("t=%d,", now.Unix()) + stripeSign(payload, inputTestSecret, now.Add(time.Hour).Unix()), false},
		{"wrong secret", stripeSign(payload, "whsec_other", now.Unix()), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev, _, err := parseEvent(payload, c.header, inputTestSecret, tolerance, now)
			if c.ok {
				if err != nil || ev.ID != "evt_InputTest1" {
					t.Fatalf("refused a valid signature: %+v %v", ev, err)
				}
				return
			}
			if !errors.Is(err, ErrWebhookSignature) {
				t.Fatalf("accepted (or refused otherwise): %+v %v", ev, err)
			}
		})
	}
	// Through the exported entry point, on the real clock.
	future := stripeSign(payload, inputTestSecret, time.Now().Add(time.Hour).Unix())
	if _, _, err := ParseEvent(payload, future, inputTestSecret, tolerance); !errors.Is(err, ErrWebhookSignature) {
		t.Fatalf("ParseEvent accepted a signature an hour ahead: %v", err)
	}
}

func TestEventFieldsPostgreSQLCannotStoreAreNamed(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, c := range []struct{ name, body, field string }{
		{"customer NUL", `{"id":"evt_F1","object":"event","type":"invoice.paid","created":1,"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_\u0000"}}}`, "data.object.customer"},
		{"expanded customer NUL", `{"id":"evt_F2","object":"event","type":"invoice.paid","created":1,"data":{"object":{"id":"in_1","object":"invoice","customer":{"id":"cus_\u0001"}}}}`, "data.object.customer"},
		{"created past 9999", `{"id":"evt_F3","object":"event","type":"invoice.paid","created":253402300800,"data":{"object":{"id":"in_1","object":"invoice"}}}`, "created"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := parseEvent([]byte(c.body), stripeSign([]byte(c.body), inputTestSecret, now.Unix()), inputTestSecret, time.Minute, now)
			var fe *PayloadFieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrWebhookPayload) {
				t.Fatalf("got %v, want a payload error naming %s", err, c.field)
			}
		})
	}
}
