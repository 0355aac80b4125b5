package config

import (
	"fmt"
	"time"
)

// Billing units.
const (
	// UnitTokens bills the number of tokens (prompt + completion).
	UnitTokens = "tokens"
	// UnitCostNanoUSD bills the cost in nano-USD.
	UnitCostNanoUSD = "cost_nano_usd"
)

// Billing defaults.
const (
	DefaultBillingWindow  = time.Hour
	DefaultReportDelay    = 2 * time.Minute
	DefaultReportInterval = 30 * time.Second
	// Billing lifecycle defaults.
	DefaultGracePeriod      = 72 * time.Hour
	DefaultFallbackPlan     = "free"
	DefaultWebhookTolerance = 5 * time.Minute
	DefaultDunningInterval  = time.Minute
)

// Billing configures billing records and their reporting to Stripe.
type Billing struct {
	// Window is the billing record window, default 1h.
	Window Duration `yaml:"window"`
	// ReportDelay is the grace after a window ends before it is reported, default 2m.
	ReportDelay Duration `yaml:"report_delay"`
	// ReportInterval is how often the reporter looks, default 30s.
	ReportInterval Duration `yaml:"report_interval"`
	// Unit is "tokens" (default) or "cost_nano_usd".
	Unit string `yaml:"unit"`
	// GracePeriod is how long an account keeps its plan after a failed
	// payment before it is downgraded, default 72h.
	GracePeriod Duration `yaml:"grace_period"`
	// FallbackPlan is the plan applied to a downgraded account and after a
	// subscription ended; default "free".
	FallbackPlan string `yaml:"fallback_plan"`
	// CheckoutSuccessURL and CheckoutCancelURL are where Stripe Checkout
	// sends the customer back; PortalReturnURL is the billing portal's
	// way back. Required for checkout and portal.
	CheckoutSuccessURL string `yaml:"checkout_success_url"`
	CheckoutCancelURL  string `yaml:"checkout_cancel_url"`
	PortalReturnURL    string `yaml:"portal_return_url"`
	// WebhookTolerance is the oldest webhook signature accepted, default 5m.
	WebhookTolerance Duration `yaml:"webhook_tolerance"`
	// DunningInterval is how often the bill role looks for accounts whose
	// grace period ended, default 1m.
	DunningInterval Duration `yaml:"dunning_interval"`
	// StripeRateLimit caps the billing reporter's Stripe calls per second;
	// 0 means the reporter's default (80, under Stripe's live limit).
	StripeRateLimit float64 `yaml:"stripe_rate_limit"`
}

func (b *Billing) setDefaults() {
	setDuration(&b.Window, DefaultBillingWindow)
	setDuration(&b.ReportDelay, DefaultReportDelay)
	setDuration(&b.ReportInterval, DefaultReportInterval)
	if b.Unit == "" {
		b.Unit = UnitTokens
	}
	setDuration(&b.GracePeriod, DefaultGracePeriod)
	if b.FallbackPlan == "" {
		b.FallbackPlan = DefaultFallbackPlan
	}
	setDuration(&b.WebhookTolerance, DefaultWebhookTolerance)
	setDuration(&b.DunningInterval, DefaultDunningInterval)
}

// setDuration sets an unset (zero) duration to def.
func setDuration(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

// validate checks the billing records, their reporting and the billing
// lifecycle (checkout, webhooks, dunning) against the plans.
func (b Billing) validate(plans []Plan, bad *problems) {
	if b.Window <= 0 {
		bad.add("billing.window", "must be positive, got %s", b.Window.D())
	}
	if b.ReportDelay < 0 {
		bad.add("billing.report_delay", "must not be negative, got %s", b.ReportDelay.D())
	}
	if b.ReportInterval <= 0 {
		bad.add("billing.report_interval", "must be positive, got %s", b.ReportInterval.D())
	}
	switch b.Unit {
	case UnitTokens, UnitCostNanoUSD:
	default:
		bad.add("billing.unit", "unknown unit %q (want %q or %q)", b.Unit, UnitTokens, UnitCostNanoUSD)
	}
	if b.GracePeriod < 0 {
		bad.add("billing.grace_period", "must not be negative, got %s", b.GracePeriod.D())
	}
	if b.WebhookTolerance <= 0 {
		bad.add("billing.webhook_tolerance", "must be positive, got %s", b.WebhookTolerance.D())
	}
	if b.StripeRateLimit < 0 || b.StripeRateLimit > 1000 {
		bad.add("billing.stripe_rate_limit", "must be between 0 (default) and 1000 calls per second, got %v", b.StripeRateLimit)
	}
	if b.DunningInterval <= 0 {
		bad.add("billing.dunning_interval", "must be positive, got %s", b.DunningInterval.D())
	}
	for _, u := range []struct{ field, v string }{
		{"billing.checkout_success_url", b.CheckoutSuccessURL}, {"billing.checkout_cancel_url", b.CheckoutCancelURL}, {"billing.portal_return_url", b.PortalReturnURL},
	} {
		if u.v != "" && !isHTTPURL(u.v) {
			bad.add(u.field, "%q must start with http:// or https://", u.v)
		}
	}
	validateStripePrices(b.FallbackPlan, plans, bad)
}

// validateStripePrices checks that the fallback plan exists and that each
// Stripe price sells one plan.
func validateStripePrices(fallback string, plans []Plan, bad *problems) {
	if len(plans) > 0 {
		if _, ok := planNamed(plans, fallback); !ok {
			bad.add("billing.fallback_plan", "%q is not a configured plan", fallback)
		}
	}
	prices := map[string]string{}
	for i, p := range plans {
		for _, pr := range []struct{ field, id string }{{"stripe_price", p.StripePrice}, {"stripe_metered_price", p.StripeMeteredPrice}} {
			if pr.id == "" {
				continue
			}
			if other, ok := prices[pr.id]; ok && other != p.Name {
				bad.add(fmt.Sprintf("plans[%d].%s", i, pr.field), "price %q is also plan %q's: a price must map to one plan", pr.id, other)
			}
			prices[pr.id] = p.Name
		}
		if p.StripeMeteredPrice != "" && p.StripePrice == "" {
			bad.add(fmt.Sprintf("plans[%d].stripe_price", i), "required with stripe_metered_price")
		}
	}
}

// PlanForStripePrice returns the plan that sells a Stripe price (its
// stripe_price or stripe_metered_price).
func (c *Config) PlanForStripePrice(priceID string) (string, bool) {
	if priceID == "" {
		return "", false
	}
	for _, p := range c.Plans {
		if p.StripePrice == priceID || p.StripeMeteredPrice == priceID {
			return p.Name, true
		}
	}
	return "", false
}
