package stripe

import (
	"errors"
	"net/http"
	"strings"
	"time"

	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// DefaultStripeTimeout bounds one HTTP request to Stripe.
const DefaultStripeTimeout = 20 * time.Second

// stripeMaxNetworkRetries is how often stripe-go retries a request that
// failed in a way Stripe marks as retryable (network errors, 409, lock
// timeouts, 503, Stripe-Should-Retry). Each POST carries one idempotency
// key across its retries, so a retry never doubles an effect.
const stripeMaxNetworkRetries = 2

// NewStripeClient returns a Stripe API client for secretKey. apiBase, when
// not empty (STRIPE_API_BASE, e.g. a stripe-mock), replaces
// https://api.stripe.com for every backend. timeout bounds each HTTP
// request (DefaultStripeTimeout when not positive). The client uses no
// package-level state of stripe-go, and stripe-go's own logger is silenced:
// callers log the errors they get.
func NewStripeClient(secretKey, apiBase string, timeout time.Duration) *client.API {
	if timeout <= 0 {
		timeout = DefaultStripeTimeout
	}
	// headerTransport lets the reporter see Retry-After and
	// Stripe-Should-Retry, which stripe-go's errors do not carry.
	httpClient := &http.Client{Timeout: timeout, Transport: headerTransport{next: http.DefaultTransport}}
	config := func(defaultURL string) *stripe.BackendConfig {
		u := defaultURL
		if apiBase != "" {
			u = strings.TrimRight(apiBase, "/")
		}
		return &stripe.BackendConfig{
			HTTPClient:        httpClient,
			URL:               stripe.String(u),
			MaxNetworkRetries: stripe.Int64(stripeMaxNetworkRetries),
			LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		}
	}
	// Each backend gets its own config: GetBackendWithConfig writes its
	// defaults into the struct it is given.
	return client.New(secretKey, &stripe.Backends{
		API:     stripe.GetBackendWithConfig(stripe.APIBackend, config(stripe.APIURL)),
		Connect: stripe.GetBackendWithConfig(stripe.ConnectBackend, config(stripe.ConnectURL)),
		Uploads: stripe.GetBackendWithConfig(stripe.UploadsBackend, config(stripe.UploadsURL)),
	})
}

// Error kinds, the "kind" label of the errors metric.
const (
	errKindStore          = "store"
	errKindAccount        = "account"
	errKindInvalidRecord  = "invalid_record"
	errKindStripeRejected = "stripe_rejected"
	errKindStripeLimited  = "stripe_rate_limited"
	errKindStripeServer   = "stripe_server"
	errKindStripeNetwork  = "stripe_network"
	errKindHook           = "after_stripe_accepted"
)

// isDuplicateIdentifier reports whether Stripe refused a meter event
// because its identifier was already used, which for the reporter means
// the event was accepted earlier (identifiers are record ids, and a record
// is only ever sent with its closed quantity). Stripe answers 400
// invalid_request_error "An event already exists with identifier …".
func isDuplicateIdentifier(err error) bool {
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode != http.StatusBadRequest {
		return false
	}
	if se.Code == "duplicate_meter_event" {
		return true
	}
	msg := strings.ToLower(se.Msg)
	return strings.Contains(msg, "already exists with identifier") ||
		(strings.Contains(msg, "identifier") && strings.Contains(msg, "already"))
}

// stripeErrorKind classifies an error from a Stripe call.
func stripeErrorKind(err error) string {
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode == 0 {
		return errKindStripeNetwork
	}
	switch {
	case se.HTTPStatusCode == http.StatusTooManyRequests:
		return errKindStripeLimited
	case se.HTTPStatusCode >= 500:
		return errKindStripeServer
	default:
		return errKindStripeRejected
	}
}

// isBackpressure reports whether an error kind means Stripe (or the way to
// it) is struggling, so the pass should stop and the next one back off.
func isBackpressure(kind string) bool {
	return kind == errKindStripeLimited || kind == errKindStripeServer || kind == errKindStripeNetwork
}
