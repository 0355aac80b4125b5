package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/money"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefault(t *testing.T) {
	cfg, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := cfg.Model("echo")
	if !ok {
		t.Fatal("default has no echo model")
	}
	if want := "development model: answers with your last message; no provider key needed"; m.Description != want {
		t.Errorf("echo description = %q", m.Description)
	}
	if got := m.ParsedPrice(); got != (money.Price{InputPerMillion: 500_000_000, OutputPerMillion: 1_500_000_000}) {
		t.Errorf("echo price = %+v", got)
	}
	if !reflect.DeepEqual(m.Deployments, []Deployment{{Provider: "echo", Model: "echo"}}) {
		t.Errorf("echo deployments = %+v", m.Deployments)
	}
	p, ok := cfg.Provider("echo")
	if !ok || p.Kind != KindEcho || p.Timeout.D() != 120*time.Second {
		t.Errorf("echo provider = %+v, %v", p, ok)
	}
	free, ok := cfg.Plan("free")
	if !ok || free.RequestsPerMinute != 60 || free.TokensPerMinute != 100_000 || len(free.Models) != 0 {
		t.Errorf("free plan = %+v", free)
	}
	if d, ok := free.DailyBudget(); !ok || d != 1_000_000_000 {
		t.Errorf("free daily budget = %d, %v", d, ok)
	}
	if d, ok := free.MonthlyBudget(); !ok || d != 10_000_000_000 {
		t.Errorf("free monthly budget = %d, %v", d, ok)
	}
	pro, ok := cfg.Plan("pro")
	if !ok || pro.RequestsPerMinute != 600 || pro.TokensPerMinute != 2_000_000 {
		t.Errorf("pro plan = %+v", pro)
	}
	if d, _ := pro.MonthlyBudget(); d != 1_000_000_000_000 {
		t.Errorf("pro monthly budget = %d", d)
	}
	if _, ok := cfg.Plan("enterprise"); ok {
		t.Error("unknown plan found")
	}
	if _, ok := cfg.Model("gpt-5"); ok {
		t.Error("unknown model found")
	}
	if _, ok := cfg.Provider("openai"); ok {
		t.Error("unknown provider found")
	}
	want := Billing{Window: Duration(time.Hour), ReportDelay: Duration(2 * time.Minute), ReportInterval: Duration(30 * time.Second), Unit: UnitTokens,
		GracePeriod: Duration(DefaultGracePeriod), FallbackPlan: DefaultFallbackPlan, WebhookTolerance: Duration(DefaultWebhookTolerance), DunningInterval: Duration(DefaultDunningInterval)}
	if cfg.Billing != want {
		t.Errorf("billing = %+v", cfg.Billing)
	}
}

func TestEnv(t *testing.T) {
	cfg, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Env
	if e.DatabaseURL != DefaultDatabaseURL || e.HTTPAddr != ":8080" || e.LogLevel != "info" ||
		e.StripeMeterEventName != "tollgate_tokens" || e.KafkaBrokers != nil || e.AdminToken != "" {
		t.Errorf("default env = %+v", e)
	}
	if !strings.HasSuffix(e.InstanceID, "-"+strconv.Itoa(os.Getpid())) {
		t.Errorf("default instance id %q does not end in the pid", e.InstanceID)
	}

	cfg, err = Load("", env(map[string]string{
		"TOLLGATE_DATABASE_URL":           "postgres://db/x",
		"TOLLGATE_HTTP_ADDR":              "127.0.0.1:9000",
		"TOLLGATE_ADMIN_TOKEN":            "adm",
		"TOLLGATE_KAFKA_BROKERS":          " k1:9092, ,k2:9092 ",
		"TOLLGATE_REDIS_URL":              "redis://r:6379/0",
		"STRIPE_SECRET_KEY":               "sk_test_x",
		"STRIPE_WEBHOOK_SECRET":           "whsec_x",
		"STRIPE_API_BASE":                 "http://127.0.0.1:12111",
		"STRIPE_METER_EVENT_NAME":         "custom",
		"TOLLGATE_INSTANCE_ID":            "api-1",
		"TOLLGATE_LOG_LEVEL":              "debug",
		"TOLLGATE_RESPONSE_DEADLINE":      "20s",
		"TOLLGATE_DATABASE_QUERY_TIMEOUT": "3s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Env{ResponseDeadline: 20 * time.Second, DatabaseQueryTimeout: 3 * time.Second,
		DatabaseURL: "postgres://db/x", HTTPAddr: "127.0.0.1:9000", AdminToken: "adm",
		KafkaBrokers: []string{"k1:9092", "k2:9092"}, RedisURL: "redis://r:6379/0",
		StripeSecretKey: "sk_test_x", StripeWebhookSecret: "whsec_x", StripeAPIBase: "http://127.0.0.1:12111",
		StripeMeterEventName: "custom", InstanceID: "api-1", LogLevel: "debug",
	}
	if !reflect.DeepEqual(cfg.Env, want) {
		t.Errorf("env = %+v\nwant %+v", cfg.Env, want)
	}
	if _, err := Load("", env(map[string]string{"TOLLGATE_RESPONSE_DEADLINE": "soon"})); err == nil || !strings.Contains(err.Error(), "TOLLGATE_RESPONSE_DEADLINE") {
		t.Errorf("a bad TOLLGATE_RESPONSE_DEADLINE: %v", err)
	}
	if _, err := Load("", env(map[string]string{"TOLLGATE_DATABASE_QUERY_TIMEOUT": "-1s"})); err == nil || !strings.Contains(err.Error(), "TOLLGATE_DATABASE_QUERY_TIMEOUT") {
		t.Errorf("a bad TOLLGATE_DATABASE_QUERY_TIMEOUT: %v", err)
	}
}

func TestLoadExample(t *testing.T) {
	cfg, err := Load("example.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := cfg.Model("gpt-4o-mini")
	if !ok {
		t.Fatal("no gpt-4o-mini")
	}
	if got := m.ParsedPrice(); got != (money.Price{InputPerMillion: 150_000_000, OutputPerMillion: 600_000_000}) {
		t.Errorf("gpt-4o-mini price = %+v", got)
	}
	if len(m.Deployments) != 2 || m.Deployments[0].Provider != "openai" || m.Deployments[1].Provider != "local" {
		t.Errorf("gpt-4o-mini deployments = %+v", m.Deployments)
	}
	if m.MaxOutputTokens != 16384 {
		t.Errorf("max_output_tokens = %d", m.MaxOutputTokens)
	}
	p, _ := cfg.Provider("openai")
	if p.APIKeyEnv != "OPENAI_API_KEY" || p.BaseURL != "https://api.openai.com/v1" || p.Kind != KindOpenAI {
		t.Errorf("openai provider = %+v", p)
	}
	local, _ := cfg.Provider("local")
	if local.Timeout.D() != 300*time.Second || local.APIKeyEnv != "" {
		t.Errorf("local provider = %+v", local)
	}
	free, _ := cfg.Plan("free")
	if free.AllowsModel("gpt-4o-mini") || !free.AllowsModel("echo") {
		t.Errorf("free plan models = %v", free.Models)
	}
	pro, _ := cfg.Plan("pro")
	if !pro.AllowsModel("gpt-4o-mini") || pro.StripePrice != "price_pro_monthly" {
		t.Errorf("pro plan = %+v", pro)
	}
}

func TestLoadFromEnv(t *testing.T) {
	cfg, err := LoadFromEnv(env(map[string]string{ConfigPathEnv: "example.yaml"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Model("gpt-4o-mini"); !ok {
		t.Error("TOLLGATE_CONFIG not used")
	}
	cfg, err = LoadFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Models) != 1 || cfg.Models[0].Name != "echo" {
		t.Errorf("unset TOLLGATE_CONFIG did not give the default: %+v", cfg.Models)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), env(nil)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file error = %v", err)
	}
	_, err := Load(write("unknown.yaml", "providers: []\nmodles: []\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "modles") {
		t.Errorf("unknown key error = %v", err)
	}
	_, err = Load(write("empty.yaml", ""), env(nil))
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file error = %v", err)
	}
	_, err = Load(write("dur.yaml", "billing:\n  window: soon\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), `duration "soon"`) {
		t.Errorf("bad duration error = %v", err)
	}
	_, err = Load(write("invalid.yaml", "providers: [{name: p, kind: grpc}]\n"), env(nil))
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "invalid.yaml") {
		t.Errorf("validation error from file = %v", err)
	}
}

const validYAML = `
providers:
  - {name: openai, kind: openai, base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY}
  - {name: echo, kind: echo}
models:
  - name: m
    deployments: [{provider: openai, model: gpt-4o-mini}]
    price: {input_per_million: "0.15", output_per_million: "0.60"}
plans:
  - {name: free, models: [m], daily_budget_usd: "1"}
`

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(c *Config)
		field string
		msg   string
	}{
		{"no providers", func(c *Config) { c.Providers = nil; c.Models = nil }, "providers", "at least one provider"},
		{"provider without name", func(c *Config) { c.Providers[1].Name = "" }, "providers[1].name", "required"},
		{"duplicate provider", func(c *Config) { c.Providers[1].Name = "openai" }, "providers[1].name", `duplicate provider name "openai"`},
		{"unknown kind", func(c *Config) { c.Providers[1].Kind = "grpc" }, "providers[1].kind", `unknown provider kind "grpc"`},
		{"missing kind", func(c *Config) { c.Providers[1].Kind = "" }, "providers[1].kind", "required"},
		{"openai without base_url", func(c *Config) { c.Providers[0].BaseURL = "" }, "providers[0].base_url", "required for an openai provider"},
		{"base_url not http", func(c *Config) { c.Providers[0].BaseURL = "api.openai.com" }, "providers[0].base_url", "must start with http"},
		{"negative timeout", func(c *Config) { c.Providers[0].Timeout = -1 }, "providers[0].timeout", "must be positive"},
		{"no models", func(c *Config) { c.Models = nil; c.Plans = nil }, "models", "at least one model"},
		{"model without name", func(c *Config) { c.Models[0].Name = "" }, "models[0].name", "required"},
		{"duplicate model", func(c *Config) { c.Models = append(c.Models, c.Models[0]) }, "models[1].name", `duplicate model name "m"`},
		{"no deployments", func(c *Config) { c.Models[0].Deployments = nil }, "models[0].deployments", "at least one deployment"},
		{"deployment unknown provider", func(c *Config) { c.Models[0].Deployments[0].Provider = "azure" }, "models[0].deployments[0].provider", `unknown provider "azure"`},
		{"deployment without provider", func(c *Config) { c.Models[0].Deployments[0].Provider = "" }, "models[0].deployments[0].provider", "required"},
		{"deployment without model", func(c *Config) { c.Models[0].Deployments[0].Model = "" }, "models[0].deployments[0].model", "required"},
		{"negative weight", func(c *Config) { c.Models[0].Deployments[0].Weight = -1 }, "models[0].deployments[0].weight", "must not be negative"},
		{"price rounds", func(c *Config) { c.Models[0].Price.InputPerMillion = "0.1234" }, "models[0].price", "not a whole number of nano-USD per token"},
		{"price missing", func(c *Config) { c.Models[0].Price.OutputPerMillion = "" }, "models[0].price", "empty"},
		{"price negative", func(c *Config) { c.Models[0].Price.OutputPerMillion = "-1" }, "models[0].price", "negative"},
		{"negative max output", func(c *Config) { c.Models[0].MaxOutputTokens = -5 }, "models[0].max_output_tokens", "must not be negative"},
		{"plan without name", func(c *Config) { c.Plans[0].Name = "" }, "plans[0].name", "required"},
		{"duplicate plan", func(c *Config) { c.Plans = append(c.Plans, c.Plans[0]) }, "plans[1].name", `duplicate plan name "free"`},
		{"plan unknown model", func(c *Config) { c.Plans[0].Models = []string{"m", "gpt-9"} }, "plans[0].models[1]", `unknown model "gpt-9"`},
		{"negative rpm", func(c *Config) { c.Plans[0].RequestsPerMinute = -1 }, "plans[0].requests_per_minute", "must not be negative"},
		{"negative tpm", func(c *Config) { c.Plans[0].TokensPerMinute = -1 }, "plans[0].tokens_per_minute", "must not be negative"},
		{"bad daily budget", func(c *Config) { c.Plans[0].DailyBudgetUSD = "1e3" }, "plans[0].daily_budget_usd", "exponent"},
		{"bad monthly budget", func(c *Config) { c.Plans[0].MonthlyBudgetUSD = "ten" }, "plans[0].monthly_budget_usd", "bad budget"},
		{"zero window", func(c *Config) { c.Billing.Window = 0 }, "billing.window", "must be positive"},
		{"negative window", func(c *Config) { c.Billing.Window = Duration(-time.Hour) }, "billing.window", "must be positive"},
		{"negative report delay", func(c *Config) { c.Billing.ReportDelay = -1 }, "billing.report_delay", "must not be negative"},
		{"zero report interval", func(c *Config) { c.Billing.ReportInterval = 0 }, "billing.report_interval", "must be positive"},
		{"unknown unit", func(c *Config) { c.Billing.Unit = "requests" }, "billing.unit", `unknown unit "requests"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(validYAML))
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("base config invalid: %v", err)
			}
			tt.edit(cfg)
			err = cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			// errors.Join may carry several; the expected one must be among them.
			found := false
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var v *ValidationError
				if errors.As(e, &v) && v.Field == tt.field && strings.Contains(v.Error(), tt.msg) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want field %s with %q, got: %v", tt.field, tt.msg, err)
			}
		})
	}
}

func TestValidatePriceErrorWrapsMoney(t *testing.T) {
	cfg, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Models[0].Price.InputPerMillion = "0.0001"
	if err := cfg.Validate(); !errors.Is(err, money.ErrInexactPrice) {
		t.Fatalf("error %v does not wrap money.ErrInexactPrice", err)
	}
}

func TestZeroBudgetIsNotUnlimited(t *testing.T) {
	cfg, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Plans[0].DailyBudgetUSD = "0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if b, ok := cfg.Plans[0].DailyBudget(); !ok || b != 0 {
		t.Errorf("daily budget = %d, %v; want 0, true", b, ok)
	}
	if _, ok := cfg.Plans[0].MonthlyBudget(); ok {
		t.Error("unset monthly budget reported as limited")
	}
}

func TestBillingLifecycleConfig(t *testing.T) {
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

func TestProvidersAndRoutingConfig(t *testing.T) {
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

func TestRoutingValidation(t *testing.T) {
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

// flatten unwraps an errors.Join.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
