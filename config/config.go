// Package config loads Tollgate's configuration: one YAML file (providers,
// models and their prices, plans, billing) plus environment variables for
// secrets and addresses.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate/tollgate/money"
)

// Provider kinds.
const (
	// KindOpenAI is any server speaking OpenAI's chat completions API.
	KindOpenAI = "openai"
	// KindEcho is the built-in development provider that answers with the last user message.
	KindEcho = "echo"
)

// Billing units.
const (
	// UnitTokens bills the number of tokens (prompt + completion).
	UnitTokens = "tokens"
	// UnitCostNanoUSD bills the cost in nano-USD.
	UnitCostNanoUSD = "cost_nano_usd"
)

// Defaults applied when a field is left unset.
const (
	DefaultProviderTimeout = 120 * time.Second
	DefaultBillingWindow   = time.Hour
	DefaultReportDelay     = 2 * time.Minute
	DefaultReportInterval  = 30 * time.Second
	DefaultDatabaseURL     = "postgres://127.0.0.1:5432/tollgate?sslmode=disable"
	DefaultHTTPAddr        = ":8080"
	DefaultMeterEventName  = "tollgate_tokens"
	DefaultLogLevel        = "info"
)

// Config is the whole configuration.
type Config struct {
	Providers []Provider `yaml:"providers"`
	Models    []Model    `yaml:"models"`
	Plans     []Plan     `yaml:"plans"`
	Billing   Billing    `yaml:"billing"`
	// Env holds values from environment variables; never read from YAML so
	// secrets stay out of files.
	Env Env `yaml:"-"`
}

// Provider is an upstream LLM endpoint.
type Provider struct {
	Name string `yaml:"name"`
	// Kind is "openai" (any OpenAI-compatible server) or "echo" (built-in dev provider).
	Kind string `yaml:"kind"`
	// BaseURL is required for openai, e.g. https://api.openai.com/v1.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the env var holding the key (optional: local servers need none).
	APIKeyEnv string `yaml:"api_key_env"`
	// Timeout is the per-request timeout, default 120s.
	Timeout Duration `yaml:"timeout"`
}

// Model is a client-facing model and where it is served.
type Model struct {
	// Name is the client-facing name.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Deployments are tried in order; at least one.
	Deployments []Deployment `yaml:"deployments"`
	Price       PriceConfig  `yaml:"price"`
	// MaxOutputTokens is an optional cap on completion tokens (0 = none).
	MaxOutputTokens int64 `yaml:"max_output_tokens"`

	// price is parsed by Validate so ParsedPrice cannot fail afterwards.
	price money.Price
}

// Deployment is one place a model is served: a provider and its upstream model name.
type Deployment struct {
	Provider string `yaml:"provider"`
	// Model is the upstream model name.
	Model  string `yaml:"model"`
	Weight int    `yaml:"weight"`
}

// PriceConfig is a model's price as decimal USD strings per million tokens.
type PriceConfig struct {
	InputPerMillion  string `yaml:"input_per_million"`
	OutputPerMillion string `yaml:"output_per_million"`
}

// Plan maps a Stripe price to quota limits.
type Plan struct {
	Name        string `yaml:"name"`
	StripePrice string `yaml:"stripe_price"`
	// Models lists allowed client-facing models; empty = all.
	Models            []string `yaml:"models"`
	RequestsPerMinute int64    `yaml:"requests_per_minute"`
	TokensPerMinute   int64    `yaml:"tokens_per_minute"`
	// DailyBudgetUSD and MonthlyBudgetUSD are decimal USD strings; empty = unlimited.
	DailyBudgetUSD   string `yaml:"daily_budget_usd"`
	MonthlyBudgetUSD string `yaml:"monthly_budget_usd"`

	dailyBudget, monthlyBudget money.NanoUSD
	hasDaily, hasMonthly       bool
}

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
}

// Env holds settings taken from environment variables.
type Env struct {
	DatabaseURL          string   // TOLLGATE_DATABASE_URL
	HTTPAddr             string   // TOLLGATE_HTTP_ADDR
	AdminToken           string   // TOLLGATE_ADMIN_TOKEN (may be empty: the server then generates and prints one)
	KafkaBrokers         []string // TOLLGATE_KAFKA_BROKERS, comma separated; empty = PostgreSQL bus
	RedisURL             string   // TOLLGATE_REDIS_URL
	StripeSecretKey      string   // STRIPE_SECRET_KEY
	StripeWebhookSecret  string   // STRIPE_WEBHOOK_SECRET
	StripeAPIBase        string   // STRIPE_API_BASE (e.g. http://127.0.0.1:12111 for stripe-mock)
	StripeMeterEventName string   // STRIPE_METER_EVENT_NAME
	InstanceID           string   // TOLLGATE_INSTANCE_ID, default hostname-pid
	LogLevel             string   // TOLLGATE_LOG_LEVEL
}

// Duration is a time.Duration written in YAML as "30s", "1h".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q (use e.g. \"30s\", \"1h\"): %w", n.Line, s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ValidationError is one problem found by Validate, naming the offending field.
type ValidationError struct {
	Field   string // e.g. "models[2].price.input_per_million"
	Message string
	Err     error // underlying cause, if any
}

// Error implements error.
func (e *ValidationError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Field, e.Message, e.Err)
	}
	return e.Field + ": " + e.Message
}

// Unwrap returns the underlying cause.
func (e *ValidationError) Unwrap() error { return e.Err }

// Load reads the YAML file at path (path "" = Default()), reads Env from
// getenv, fills defaults and validates. Unknown YAML keys are an error.
func Load(path string, getenv func(string) string) (*Config, error) {
	var cfg *Config
	if path == "" {
		cfg = Default()
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		cfg, err = Parse(b)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg.Env = envFrom(getenv)
	if err := cfg.Validate(); err != nil {
		if path != "" {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// ConfigPathEnv names the environment variable holding the config file path.
const ConfigPathEnv = "TOLLGATE_CONFIG"

// LoadFromEnv is Load with the path taken from TOLLGATE_CONFIG (unset = built-in default).
func LoadFromEnv(getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	return Load(getenv(ConfigPathEnv), getenv)
}

// Parse decodes YAML into a Config and applies defaults, without validating
// and without reading the environment.
func Parse(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a typo in a key must fail loudly, not silently use a default
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty config file")
		}
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	cfg.applyDefaults()
	return &cfg, nil
}

func (c *Config) applyDefaults() {
	for i := range c.Providers {
		if c.Providers[i].Timeout == 0 {
			c.Providers[i].Timeout = Duration(DefaultProviderTimeout)
		}
	}
	if c.Billing.Window == 0 {
		c.Billing.Window = Duration(DefaultBillingWindow)
	}
	if c.Billing.ReportDelay == 0 {
		c.Billing.ReportDelay = Duration(DefaultReportDelay)
	}
	if c.Billing.ReportInterval == 0 {
		c.Billing.ReportInterval = Duration(DefaultReportInterval)
	}
	if c.Billing.Unit == "" {
		c.Billing.Unit = UnitTokens
	}
}

func envFrom(getenv func(string) string) Env {
	or := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	var brokers []string
	for _, b := range strings.Split(getenv("TOLLGATE_KAFKA_BROKERS"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	instance := getenv("TOLLGATE_INSTANCE_ID")
	if instance == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "tollgate"
		}
		instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return Env{
		DatabaseURL:          or("TOLLGATE_DATABASE_URL", DefaultDatabaseURL),
		HTTPAddr:             or("TOLLGATE_HTTP_ADDR", DefaultHTTPAddr),
		AdminToken:           getenv("TOLLGATE_ADMIN_TOKEN"),
		KafkaBrokers:         brokers,
		RedisURL:             getenv("TOLLGATE_REDIS_URL"),
		StripeSecretKey:      getenv("STRIPE_SECRET_KEY"),
		StripeWebhookSecret:  getenv("STRIPE_WEBHOOK_SECRET"),
		StripeAPIBase:        getenv("STRIPE_API_BASE"),
		StripeMeterEventName: or("STRIPE_METER_EVENT_NAME", DefaultMeterEventName),
		InstanceID:           instance,
		LogLevel:             or("TOLLGATE_LOG_LEVEL", DefaultLogLevel),
	}
}

// Default returns the built-in configuration: the echo development provider
// and model, and free and pro plans. It is not yet validated.
func Default() *Config {
	cfg := &Config{
		Providers: []Provider{{Name: "echo", Kind: KindEcho}},
		Models: []Model{{
			Name:        "echo",
			Description: "development model: answers with your last message; no provider key needed",
			Deployments: []Deployment{{Provider: "echo", Model: "echo"}},
			// Nonzero so the billing path has something to show in development.
			Price: PriceConfig{InputPerMillion: "0.50", OutputPerMillion: "1.50"},
		}},
		Plans: []Plan{
			{Name: "free", RequestsPerMinute: 60, TokensPerMinute: 100_000, DailyBudgetUSD: "1.00", MonthlyBudgetUSD: "10.00"},
			{Name: "pro", RequestsPerMinute: 600, TokensPerMinute: 2_000_000, DailyBudgetUSD: "100.00", MonthlyBudgetUSD: "1000.00"},
		},
	}
	cfg.applyDefaults()
	return cfg
}

// Validate checks the configuration and stores parsed prices and budgets.
// It returns all problems joined (errors.Join of *ValidationError), each
// naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	badErr := func(field, msg string, err error) {
		errs = append(errs, &ValidationError{Field: field, Message: msg, Err: err})
	}

	providers := map[string]bool{}
	if len(c.Providers) == 0 {
		bad("providers", "at least one provider is required")
	}
	for i, p := range c.Providers {
		f := fmt.Sprintf("providers[%d]", i)
		switch {
		case p.Name == "":
			bad(f+".name", "required")
		case providers[p.Name]:
			bad(f+".name", "duplicate provider name %q", p.Name)
		}
		providers[p.Name] = true
		switch p.Kind {
		case KindOpenAI:
			if p.BaseURL == "" {
				bad(f+".base_url", "required for an openai provider (e.g. https://api.openai.com/v1)")
			} else if !strings.HasPrefix(p.BaseURL, "http://") && !strings.HasPrefix(p.BaseURL, "https://") {
				bad(f+".base_url", "%q must start with http:// or https://", p.BaseURL)
			}
		case KindEcho:
		case "":
			bad(f+".kind", "required (%q or %q)", KindOpenAI, KindEcho)
		default:
			bad(f+".kind", "unknown provider kind %q (want %q or %q)", p.Kind, KindOpenAI, KindEcho)
		}
		if p.Timeout < 0 {
			bad(f+".timeout", "must be positive, got %s", p.Timeout.D())
		}
	}

	models := map[string]bool{}
	if len(c.Models) == 0 {
		bad("models", "at least one model is required")
	}
	for i := range c.Models {
		m := &c.Models[i]
		f := fmt.Sprintf("models[%d]", i)
		switch {
		case m.Name == "":
			bad(f+".name", "required")
		case models[m.Name]:
			bad(f+".name", "duplicate model name %q", m.Name)
		}
		models[m.Name] = true
		if len(m.Deployments) == 0 {
			bad(f+".deployments", "at least one deployment is required")
		}
		for j, d := range m.Deployments {
			df := fmt.Sprintf("%s.deployments[%d]", f, j)
			if d.Provider == "" {
				bad(df+".provider", "required")
			} else if !providers[d.Provider] {
				bad(df+".provider", "unknown provider %q", d.Provider)
			}
			if d.Model == "" {
				bad(df+".model", "required (the upstream model name)")
			}
			if d.Weight < 0 {
				bad(df+".weight", "must not be negative, got %d", d.Weight)
			}
		}
		price, err := money.ParsePrice(m.Price.InputPerMillion, m.Price.OutputPerMillion)
		if err != nil {
			badErr(f+".price", "bad price", err)
		}
		m.price = price
		if m.MaxOutputTokens < 0 {
			bad(f+".max_output_tokens", "must not be negative, got %d", m.MaxOutputTokens)
		}
	}

	plans := map[string]bool{}
	for i := range c.Plans {
		p := &c.Plans[i]
		f := fmt.Sprintf("plans[%d]", i)
		switch {
		case p.Name == "":
			bad(f+".name", "required")
		case plans[p.Name]:
			bad(f+".name", "duplicate plan name %q", p.Name)
		}
		plans[p.Name] = true
		for j, name := range p.Models {
			if !models[name] {
				bad(fmt.Sprintf("%s.models[%d]", f, j), "unknown model %q", name)
			}
		}
		if p.RequestsPerMinute < 0 {
			bad(f+".requests_per_minute", "must not be negative, got %d", p.RequestsPerMinute)
		}
		if p.TokensPerMinute < 0 {
			bad(f+".tokens_per_minute", "must not be negative, got %d", p.TokensPerMinute)
		}
		p.dailyBudget, p.hasDaily = parseBudget(f+".daily_budget_usd", p.DailyBudgetUSD, badErr)
		p.monthlyBudget, p.hasMonthly = parseBudget(f+".monthly_budget_usd", p.MonthlyBudgetUSD, badErr)
	}

	b := c.Billing
	if b.Window <= 0 {
		bad("billing.window", "must be positive, got %s", b.Window.D())
	}
	if b.ReportDelay < 0 {
		bad("billing.report_delay", "must not be negative, got %s", b.ReportDelay.D())
	}
	if b.ReportInterval <= 0 {
		bad("billing.report_interval", "must be positive, got %s", b.ReportInterval.D())
	}
	switch b.Unit {
	case UnitTokens, UnitCostNanoUSD:
	default:
		bad("billing.unit", "unknown unit %q (want %q or %q)", b.Unit, UnitTokens, UnitCostNanoUSD)
	}
	return errors.Join(errs...)
}

// parseBudget returns the budget and whether there is one: an empty string
// means unlimited, while "0" is a real (zero) budget.
func parseBudget(field, s string, badErr func(field, msg string, err error)) (money.NanoUSD, bool) {
	if s == "" {
		return 0, false
	}
	n, err := money.ParseUSD(s)
	if err != nil {
		badErr(field, "bad budget", err)
		return 0, false
	}
	return n, true
}

// Model returns the model with the given client-facing name.
func (c *Config) Model(name string) (Model, bool) {
	for _, m := range c.Models {
		if m.Name == name {
			return m, true
		}
	}
	return Model{}, false
}

// Provider returns the provider with the given name.
func (c *Config) Provider(name string) (Provider, bool) {
	for _, p := range c.Providers {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}

// Plan returns the plan with the given name.
func (c *Config) Plan(name string) (Plan, bool) {
	for _, p := range c.Plans {
		if p.Name == name {
			return p, true
		}
	}
	return Plan{}, false
}

// ParsedPrice returns the model's price. It is valid after Validate (which
// Load runs); before that it is the zero Price.
func (m Model) ParsedPrice() money.Price { return m.price }

// DailyBudget returns the parsed daily budget and false when the plan has
// none (unlimited). Valid after Validate.
func (p Plan) DailyBudget() (money.NanoUSD, bool) { return p.dailyBudget, p.hasDaily }

// MonthlyBudget returns the parsed monthly budget and false when the plan has
// none (unlimited). Valid after Validate.
func (p Plan) MonthlyBudget() (money.NanoUSD, bool) { return p.monthlyBudget, p.hasMonthly }

// AllowsModel reports whether the plan may use the named model (empty Models = all).
func (p Plan) AllowsModel(name string) bool {
	if len(p.Models) == 0 {
		return true
	}
	for _, m := range p.Models {
		if m == name {
			return true
		}
	}
	return false
}
