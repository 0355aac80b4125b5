package config

import (
	"testing"
	"time"
)

func TestValidateBilling(t *testing.T) {
	t.Parallel()
	checkValidateErrors(t, []validateCase{
		{"zero window", func(c *Config) { c.Billing.Window = 0 }, "billing.window", "must be positive"},
		{"negative window", func(c *Config) { c.Billing.Window = Duration(-time.Hour) }, "billing.window", "must be positive"},
		{"negative report delay", func(c *Config) { c.Billing.ReportDelay = -1 }, "billing.report_delay", "must not be negative"},
		{"zero report interval", func(c *Config) { c.Billing.ReportInterval = 0 }, "billing.report_interval", "must be positive"},
		{"unknown unit", func(c *Config) { c.Billing.Unit = "requests" }, "billing.unit", `unknown unit "requests"`},
	})
}

func TestBillingLifecycleConfig(t *testing.T) {
	t.Parallel()
	cfg := Default()
	cfg.Plans[1].StripePrice, cfg.Plans[1].StripeMeteredPrice = "price_pro", "price_pro_metered"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for price, want := range map[string]string{"price_pro": "pro", "price_pro_metered": "pro", "price_x": "", "": ""} {
		if got, ok := cfg.PlanForStripePrice(price); got != want || ok != (want != "") {
			t.Errorf("PlanForStripePrice(%q) = %q, %v; want %q", price, got, ok, want)
		}
	}
	for name, mutate := range map[string]func(*Config){
		"unknown fallback":     func(c *Config) { c.Billing.FallbackPlan = "gold" },
		"negative grace":       func(c *Config) { c.Billing.GracePeriod = Duration(-time.Hour) },
		"price in two plans":   func(c *Config) { c.Plans[0].StripePrice = "price_pro" },
		"metered without flat": func(c *Config) { c.Plans[0].StripeMeteredPrice = "price_free_metered" },
		"bad success url":      func(c *Config) { c.Billing.CheckoutSuccessURL = "ftp://x" },
	} {
		c := Default()
		c.Plans[1].StripePrice, c.Plans[1].StripeMeteredPrice = "price_pro", "price_pro_metered"
		mutate(c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}
