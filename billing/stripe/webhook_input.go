package stripe

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tollgate/tollgate/billing"
)

// PayloadFieldError is a verified Stripe event with a field Tollgate cannot
// record (a control character in an id, a time past the year 9999). It
// wraps ErrWebhookPayload: the handler answers 400 naming Field.
type PayloadFieldError struct {
	// Field is the event's field, e.g. "data.object.customer".
	Field string
	// Problem says what is wrong with it.
	Problem string
}

func (e *PayloadFieldError) Error() string {
	return fmt.Sprintf("%s: %s: %s", ErrWebhookPayload, e.Field, e.Problem)
}

// Unwrap makes errors.Is(err, ErrWebhookPayload) hold.
func (e *PayloadFieldError) Unwrap() error { return ErrWebhookPayload }

// maxStripeCreated is 9999-12-31T23:59:59Z: a later time has no RFC 3339
// form and no PostgreSQL timestamptz.
const maxStripeCreated = 253402300799

// notInFuture refuses a Stripe-Signature whose timestamp is more than
// tolerance after now. It reads the header as stripe-go does (the last
// t= wins), so the timestamp checked is the one the signature covers.
func notInFuture(sigHeader string, tolerance time.Duration, now time.Time) error {
	var ts int64
	for _, pair := range strings.Split(sigHeader, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k != "t" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrWebhookSignature, webhook.ErrInvalidHeader)
		}
		ts = n
	}
	// Compared in seconds on this side, which cannot overflow: ts may be
	// anything up to the int64 limit.
	if limit := now.Add(tolerance).Unix(); ts > limit {
		return fmt.Errorf("%w: timestamp %d is %s in the future, beyond the tolerance of %s",
			ErrWebhookSignature, ts, futureBy(ts, now), tolerance)
	}
	return nil
}

func futureBy(ts int64, now time.Time) string {
	d := ts - now.Unix()
	if d > int64(100*365*24*time.Hour/time.Second) {
		return "more than a century"
	}
	return (time.Duration(d) * time.Second).String()
}

// checkEventFields refuses an event whose fields Tollgate records or
// queries by hold text PostgreSQL cannot store or control characters.
// (Bytes that are not UTF-8 and unpaired surrogates never get here: the
// JSON decoder turns them into U+FFFD.)
func checkEventFields(ev billing.StripeEvent, object string) error {
	fields := []struct{ name, v string }{
		{"type", ev.Type}, {"api_version", ev.APIVersion}, {"data.object.object", object},
		{"data.object.customer", ev.CustomerID}, {"data.object.status", ev.Status},
		{"data.object.metadata.plan", ev.Plan},
	}
	switch object {
	case "subscription":
		fields = append(fields, struct{ name, v string }{"data.object.id", ev.SubscriptionID})
	case "checkout.session":
		fields = append(fields, struct{ name, v string }{"data.object.subscription", ev.SubscriptionID})
	case "invoice":
		fields = append(fields, struct{ name, v string }{"data.object.id", ev.InvoiceID})
	}
	for i, p := range ev.PriceIDs {
		fields = append(fields, struct{ name, v string }{fmt.Sprintf("data.object.items.data[%d].price.id", i), p})
	}
	for _, f := range fields {
		if !utf8.ValidString(f.v) {
			return &PayloadFieldError{Field: f.name, Problem: "it is not UTF-8 text"}
		}
		if i := strings.IndexFunc(f.v, unicode.IsControl); i >= 0 {
			return &PayloadFieldError{Field: f.name, Problem: fmt.Sprintf("it holds the control character %U at byte %d", []rune(f.v[i:])[0], i)}
		}
	}
	return nil
}
