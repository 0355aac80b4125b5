package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Webhook errors; the handler answers 400 to the first two (Stripe stops
// retrying a request it will never get right) and 500 to anything else
// after verification (Stripe retries, and the retry is idempotent).
var (
	// ErrWebhookSignature: the Stripe-Signature header is missing, wrong or
	// older than the tolerance. Nothing is recorded.
	ErrWebhookSignature = errors.New("invalid stripe signature")
	// ErrWebhookPayload: the signed body is not a Stripe event Tollgate can read.
	ErrWebhookPayload = errors.New("malformed stripe event")
)

var (
	stripeEventIDPattern = regexp.MustCompile(`^evt_[A-Za-z0-9]+$`)
	accountIDPattern     = regexp.MustCompile(`^acc_[A-Za-z0-9]+$`)
)

// CustomerAccounts finds the account a Stripe customer is linked to, ""
// when none is: records.CustomerLinks, over the customer links read model.
type CustomerAccounts interface {
	AccountForCustomer(ctx context.Context, customerID string) (string, error)
}

// WebhookConfig configures a Webhooks processor.
type WebhookConfig struct {
	Service *commands.Service
	// Accounts finds the account of a Stripe customer (records.CustomerLinks).
	Accounts CustomerAccounts
	Config   *config.Config
	// Secret is the endpoint's signing secret (STRIPE_WEBHOOK_SECRET).
	Secret     string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Webhooks verifies Stripe webhook events and turns them into events.
type Webhooks struct {
	cfg      WebhookConfig
	log      *slog.Logger
	received *prometheus.CounterVec
	version  prometheus.Counter
}

// NewWebhooks returns a Webhooks processor.
func NewWebhooks(cfg WebhookConfig) (*Webhooks, error) {
	if cfg.Service == nil || cfg.Accounts == nil || cfg.Config == nil {
		return nil, errors.New("billing webhooks: Service, Accounts and Config are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Webhooks{
		cfg: cfg, log: cfg.Logger.With("component", "stripe-webhooks"),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_billing_webhooks_total",
			Help: "Stripe webhook deliveries by outcome (applied, stale, unhandled, no_account, ignored, duplicate, bad_signature, malformed, error).",
		}, []string{"outcome"}),
		version: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_billing_webhook_api_version_mismatch_total",
			Help: "Verified Stripe events rendered with another API version than " + stripe.APIVersion + "; set the endpoint's API version to it.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.received, w.version} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("billing webhooks: register metrics: %w", err)
			}
		}
	}
	return w, nil
}

// WebhookResult is what a delivery came to.
type WebhookResult struct {
	EventID   string `json:"id"`
	Type      string `json:"type"`
	Outcome   string `json:"outcome"`
	Duplicate bool   `json:"duplicate"`
}

// stripeObject is the part of an event's data.object Tollgate reads. These
// fields keep their shape across Stripe API versions, which is why
// Tollgate accepts events of any API version (see ParseEvent).
type stripeObject struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Customer          json.RawMessage   `json:"customer"`
	Subscription      json.RawMessage   `json:"subscription"`
	Status            string            `json:"status"`
	Mode              string            `json:"mode"`
	ClientReferenceID string            `json:"client_reference_id"`
	Metadata          map[string]string `json:"metadata"`
	Items             struct {
		Data []struct {
			Price struct {
				ID string `json:"id"`
			} `json:"price"`
		} `json:"data"`
	} `json:"items"`
}

// idOf reads an id that Stripe sends as a string or, expanded, as an object.
func idOf(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &o) // neither form: no id
	return o.ID
}

// ParseEvent verifies a webhook delivery's signature (with tolerance) and
// reads the event. stripe-go/v76 refuses events rendered with another API
// version than 2023-10-16; Tollgate accepts them instead
// (IgnoreAPIVersionMismatch) and reads only fields that are the same in
// every version, so an endpoint pinned to a newer version keeps working.
// The event's APIVersion is returned (and recorded) for operators.
//
// A signature dated more than the tolerance in the future is refused too
// (stripe-go only checks the past): a delivery is signed when it is sent,
// so such a timestamp is a forgery attempt or a broken clock, and an
// accepted one would stay replayable until long after it was sent.
//
// Every field read from the event must be text PostgreSQL can store and
// times must lie in years 1 to 9999; otherwise the error is a
// *PayloadFieldError naming the field (it wraps ErrWebhookPayload).
func ParseEvent(payload []byte, sigHeader, secret string, tolerance time.Duration) (billing.StripeEvent, map[string]string, error) {
	return parseEvent(payload, sigHeader, secret, tolerance, time.Now())
}

func parseEvent(payload []byte, sigHeader, secret string, tolerance time.Duration, now time.Time) (billing.StripeEvent, map[string]string, error) {
	if err := webhook.ValidatePayloadWithTolerance(payload, sigHeader, secret, tolerance); err != nil {
		return billing.StripeEvent{}, nil, fmt.Errorf("%w: %w", ErrWebhookSignature, err)
	}
	if err := notInFuture(sigHeader, tolerance, now); err != nil {
		return billing.StripeEvent{}, nil, err
	}
	e, err := webhook.ConstructEventWithOptions(payload, sigHeader, secret, webhook.ConstructEventOptions{
		Tolerance: tolerance, IgnoreAPIVersionMismatch: true,
	})
	if err != nil {
		return billing.StripeEvent{}, nil, fmt.Errorf("%w: %w", ErrWebhookPayload, err)
	}
	if e.Created > maxStripeCreated {
		return billing.StripeEvent{}, nil, &PayloadFieldError{Field: "created", Problem: fmt.Sprintf("%d is after the year 9999", e.Created)}
	}
	if !stripeEventIDPattern.MatchString(e.ID) || e.Type == "" || e.Created <= 0 || e.Data == nil {
		return billing.StripeEvent{}, nil, fmt.Errorf("%w: event id %q, type %q, created %d", ErrWebhookPayload, e.ID, e.Type, e.Created)
	}
	var o stripeObject
	if err := json.Unmarshal(e.Data.Raw, &o); err != nil {
		return billing.StripeEvent{}, nil, fmt.Errorf("%w: data.object: %w", ErrWebhookPayload, err)
	}
	ev := billing.StripeEvent{
		ID: e.ID, Type: string(e.Type), Created: time.Unix(e.Created, 0).UTC(), APIVersion: e.APIVersion,
		Livemode: e.Livemode, CustomerID: idOf(o.Customer),
	}
	switch o.Object {
	case "subscription":
		ev.SubscriptionID, ev.Status = o.ID, o.Status
		for _, it := range o.Items.Data {
			ev.PriceIDs = append(ev.PriceIDs, it.Price.ID)
		}
	case "checkout.session":
		if o.Mode == "subscription" {
			ev.SubscriptionID = idOf(o.Subscription)
		}
		ev.Plan = o.Metadata["plan"]
	case "invoice":
		ev.InvoiceID = o.ID
	}
	meta := o.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	if o.ClientReferenceID != "" && meta["account_id"] == "" {
		meta["account_id"] = o.ClientReferenceID
	}
	if err := checkEventFields(ev, o.Object); err != nil {
		return billing.StripeEvent{}, nil, err
	}
	return ev, meta, nil
}

// Handle verifies and records one delivery. A delivery seen before
// changes nothing and is answered as a success.
func (w *Webhooks) Handle(ctx context.Context, payload []byte, sigHeader string) (WebhookResult, error) {
	if w.cfg.Secret == "" {
		return WebhookResult{}, fmt.Errorf("STRIPE_WEBHOOK_SECRET is not set: %w", ErrBillingNotConfigured)
	}
	ev, meta, err := ParseEvent(payload, sigHeader, w.cfg.Secret, w.cfg.Config.Billing.WebhookTolerance.D())
	switch {
	case errors.Is(err, ErrWebhookSignature):
		w.received.WithLabelValues("bad_signature").Inc()
		return WebhookResult{}, err
	case err != nil:
		w.received.WithLabelValues("malformed").Inc()
		return WebhookResult{}, err
	}
	if ev.APIVersion != stripe.APIVersion {
		w.version.Inc()
	}
	res, err := w.apply(ctx, ev, meta)
	if err != nil {
		w.received.WithLabelValues("error").Inc()
		return res, err
	}
	label := res.Outcome
	if res.Duplicate {
		label = "duplicate"
	}
	w.received.WithLabelValues(label).Inc()
	w.log.InfoContext(ctx, "stripe event", "stripe_event_id", ev.ID, "type", ev.Type, "outcome", res.Outcome,
		"duplicate", res.Duplicate, "api_version", ev.APIVersion)
	return res, nil
}

func (w *Webhooks) apply(ctx context.Context, ev billing.StripeEvent, meta map[string]string) (WebhookResult, error) {
	res := WebhookResult{EventID: ev.ID, Type: ev.Type}
	md := events.Metadata{CorrelationID: ev.ID, CausationID: ev.ID, Actor: "stripe"}
	record := func(outcome string) (WebhookResult, error) {
		res.Outcome = outcome
		return res, w.cfg.Service.RecordStripeEvent(ctx, md, ev, outcome)
	}
	if !billing.HandlesStripeEvent(ev.Type) {
		return record(events.WebhookUnhandled)
	}
	accountID := ""
	if ev.CustomerID != "" {
		var err error
		if accountID, err = w.cfg.Accounts.AccountForCustomer(ctx, ev.CustomerID); err != nil {
			return res, err
		}
	}
	if accountID == "" && accountIDPattern.MatchString(meta["account_id"]) {
		accountID = meta["account_id"] // set by our checkout on the session and its subscription
	}
	if accountID == "" {
		return record(events.WebhookNoAccount)
	}
	pol := billing.BillingPolicy{
		PlanForPrice: w.cfg.Config.PlanForStripePrice,
		PlanExists:   func(p string) bool { _, ok := w.cfg.Config.Plan(p); return ok },
		FallbackPlan: w.cfg.Config.Billing.FallbackPlan,
		GracePeriod:  w.cfg.Config.Billing.GracePeriod.D(),
	}
	outcome, dup, err := w.cfg.Service.ApplyStripeEvent(ctx, md, accountID, ev, pol)
	if errors.Is(err, domainerr.ErrNotFound) {
		return record(events.WebhookNoAccount)
	}
	if errors.Is(err, domainerr.ErrInvalid) {
		return res, fmt.Errorf("%w: %w", ErrWebhookPayload, err)
	}
	res.Outcome, res.Duplicate = outcome, dup
	return res, err
}
