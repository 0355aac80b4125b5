package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRoutingValidation(t *testing.T) {
	t.Parallel()
	one := 1
	minus := -1
	tests := []struct {
		name, field, msg string
		edit             func(c *Config)
	}{
		{"max_attempts", "routing.max_attempts", "at least 1", func(c *Config) { c.Routing.MaxAttempts = -1 }},
		{"max_backoff below base", "routing.max_backoff", "at least base_backoff", func(c *Config) { c.Routing.MaxBackoff = Duration(time.Millisecond) }},
		{"negative base", "routing.base_backoff", "must not be negative", func(c *Config) { c.Routing.BaseBackoff = -1 }},
		{"deadline", "routing.deadline", "must be positive", func(c *Config) { c.Routing.Deadline = -1 }},
		{"cooldown failures", "routing.cooldown.failures", "at least 1", func(c *Config) { c.Routing.Cooldown.Failures = -2 }},
		{"cooldown duration", "routing.cooldown.duration", "must be positive", func(c *Config) { c.Routing.Cooldown.Duration = -1 }},
		{"priority on some", "models[0].deployments[1].priority", "every deployment", func(c *Config) {
			c.Models[0].Deployments = []Deployment{{Provider: "echo", Model: "a", Priority: &one}, {Provider: "echo", Model: "b"}}
		}},
		{"negative priority", "models[0].deployments[0].priority", "must not be negative", func(c *Config) {
			c.Models[0].Deployments = []Deployment{{Provider: "echo", Model: "a", Priority: &minus}}
		}},
		{"api_version on echo", "providers[0].api_version", "not used", func(c *Config) { c.Providers[0].APIVersion = "1" }},
		{"bad api_version", "providers[1].api_version", "not a version", func(c *Config) {
			c.Providers = append(c.Providers, Provider{Name: "az", Kind: KindOpenAI, BaseURL: "https://x", APIVersion: "1&x=y"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			tt.edit(c)
			err := c.Validate()
			var ve *ValidationError
			found := false
			for _, e := range flatten(err) {
				if errors.As(e, &ve) && ve.Field == tt.field && strings.Contains(ve.Message, tt.msg) {
					found = true
				}
			}
			if !found {
				t.Errorf("Validate() = %v, want %s: %s", err, tt.field, tt.msg)
			}
		})
	}
}
