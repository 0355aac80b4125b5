package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestJobsDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	j := cfg.Jobs
	if j.Lease.D() != DefaultClaimLease || j.ReaperInterval.D() != DefaultReaperInterval || j.LongPollMax.D() != DefaultLongPollMax ||
		j.Callbacks.MaxAttempts != DefaultCallbackMaxAttempts || j.Callbacks.InitialBackoff.D() != DefaultCallbackInitialBackoff ||
		j.Callbacks.MaxBackoff.D() != DefaultCallbackMaxBackoff || j.Callbacks.Timeout.D() != DefaultCallbackTimeout || j.Callbacks.AllowPrivateNetworks {
		t.Errorf("defaults = %+v", j)
	}
	parsed, err := Parse([]byte("providers: [{name: echo, kind: echo}]\nmodels: [{name: echo, deployments: [{provider: echo, model: echo}], price: {input_per_million: \"1\", output_per_million: \"1\"}}]\n" +
		"jobs: {lease: 2m, reaper_interval: 5s, long_poll_max: 30s, callbacks: {max_attempts: 3, initial_backoff: 1s, max_backoff: 4s, timeout: 2s, allow_private_networks: true}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.Validate(); err != nil {
		t.Fatal(err)
	}
	if j := parsed.Jobs; j.Lease.D() != 2*time.Minute || j.Callbacks.MaxAttempts != 3 || !j.Callbacks.AllowPrivateNetworks || j.Callbacks.MaxBackoff.D() != 4*time.Second {
		t.Errorf("parsed = %+v", j)
	}
	for _, tc := range []struct {
		field string
		mut   func(*Config)
	}{
		{"jobs.lease", func(c *Config) { c.Jobs.Lease = Duration(time.Millisecond) }},
		{"jobs.reaper_interval", func(c *Config) { c.Jobs.ReaperInterval = -1 }},
		{"jobs.long_poll_max", func(c *Config) { c.Jobs.LongPollMax = Duration(time.Hour) }},
		{"jobs.callbacks.max_attempts", func(c *Config) { c.Jobs.Callbacks.MaxAttempts = -2 }},
		{"jobs.callbacks.max_backoff", func(c *Config) { c.Jobs.Callbacks.MaxBackoff = Duration(time.Second) }},
		{"jobs.callbacks.timeout", func(c *Config) { c.Jobs.Callbacks.Timeout = -1 }},
		{"TOLLGATE_CALLBACK_SECRET", func(c *Config) { c.Env.CallbackSecret = "short" }},
	} {
		c := Default()
		tc.mut(c)
		err := c.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v", tc.field, err)
		}
	}
	if e, _ := parseEnv(func(k string) string {
		if k == "TOLLGATE_CALLBACK_SECRET" {
			return "0123456789abcdef0123"
		}
		return ""
	}); e.CallbackSecret != "0123456789abcdef0123" {
		t.Errorf("CallbackSecret = %q", e.CallbackSecret)
	}
}
