package config

import (
	"testing"
	"time"
)

func TestValidateProviders(t *testing.T) {
	t.Parallel()
	checkValidateErrors(t, []validateCase{
		{"no providers", func(c *Config) { c.Providers = nil; c.Models = nil }, "providers", "at least one provider"},
		{"provider without name", func(c *Config) { c.Providers[1].Name = "" }, "providers[1].name", "required"},
		{"duplicate provider", func(c *Config) { c.Providers[1].Name = "openai" }, "providers[1].name", `duplicate provider name "openai"`},
		{"unknown kind", func(c *Config) { c.Providers[1].Kind = "grpc" }, "providers[1].kind", `unknown provider kind "grpc"`},
		{"missing kind", func(c *Config) { c.Providers[1].Kind = "" }, "providers[1].kind", "required"},
		{"openai without base_url", func(c *Config) { c.Providers[0].BaseURL = "" }, "providers[0].base_url", "required for an openai provider"},
		{"base_url not http", func(c *Config) { c.Providers[0].BaseURL = "api.openai.com" }, "providers[0].base_url", "must start with http"},
		{"negative timeout", func(c *Config) { c.Providers[0].Timeout = -1 }, "providers[0].timeout", "must be positive"},
	})
}

func TestProvidersAndRoutingConfig(t *testing.T) {
	t.Parallel()
	cfg, err := Load("example.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	an, _ := cfg.Provider("anthropic")
	if an.Kind != KindAnthropic || an.BaseURL != DefaultAnthropicBaseURL || an.APIVersion != DefaultAnthropicVersion || an.IsAzure() {
		t.Errorf("anthropic provider = %+v", an)
	}
	az, _ := cfg.Provider("azure")
	if !az.IsAzure() || az.APIVersion != "2024-10-21" || az.APIKeyEnv != "AZURE_OPENAI_API_KEY" {
		t.Errorf("azure provider = %+v", az)
	}
	m, _ := cfg.Model("gpt-4o")
	if len(m.Deployments) != 3 || *m.Deployments[0].Priority != 1 || m.Deployments[0].Weight != 3 || *m.Deployments[2].Priority != 2 {
		t.Errorf("gpt-4o deployments = %+v", m.Deployments)
	}
	want := Routing{MaxAttempts: 3, BaseBackoff: Duration(250 * time.Millisecond), MaxBackoff: Duration(8 * time.Second),
		Deadline: Duration(5 * time.Minute), Cooldown: Cooldown{Failures: 3, Duration: Duration(30 * time.Second)}}
	if cfg.Routing != want {
		t.Errorf("routing = %+v", cfg.Routing)
	}
	def, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if def.Routing != want || (Routing{}).WithDefaults() != want {
		t.Errorf("default routing = %+v", def.Routing)
	}
	custom, err := Parse([]byte(`
providers: [{name: c, kind: anthropic, base_url: "http://127.0.0.1:9/", api_version: "2024-01-01"}]
models: [{name: m, deployments: [{provider: c, model: x}], price: {input_per_million: "1", output_per_million: "1"}}]
routing: {max_attempts: 5, deadline: 30s, cooldown: {failures: 1}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := custom.Validate(); err != nil {
		t.Fatal(err)
	}
	if custom.Providers[0].BaseURL != "http://127.0.0.1:9/" || custom.Providers[0].APIVersion != "2024-01-01" ||
		custom.Routing.MaxAttempts != 5 || custom.Routing.Deadline.D() != 30*time.Second ||
		custom.Routing.Cooldown.Failures != 1 || custom.Routing.Cooldown.Duration.D() != DefaultCooldownDuration {
		t.Errorf("custom = %+v %+v", custom.Providers[0], custom.Routing)
	}
}
