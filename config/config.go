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
	// KindAnthropic is the Anthropic Messages API, translated to and from OpenAI's format.
	KindAnthropic = "anthropic"
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
	// Billing lifecycle defaults.
	DefaultGracePeriod      = 72 * time.Hour
	DefaultFallbackPlan     = "free"
	DefaultWebhookTolerance = 5 * time.Minute
	DefaultDunningInterval  = time.Minute

	// DefaultAnthropicBaseURL is the base URL of an anthropic provider without base_url.
	DefaultAnthropicBaseURL = "https://api.anthropic.com"
	// DefaultAnthropicVersion is the anthropic-version header sent when api_version is unset.
	DefaultAnthropicVersion = "2023-06-01"

	// DefaultMaxAttempts bounds the provider calls of one request (first try,
	// fallbacks and retries together).
	DefaultMaxAttempts = 3
	// DefaultBaseBackoff is the backoff before the first retry round.
	DefaultBaseBackoff = 250 * time.Millisecond
	// DefaultMaxBackoff caps the exponential backoff between retry rounds.
	DefaultMaxBackoff = 8 * time.Second
	// DefaultDeadline bounds one request's routing: every attempt and backoff.
	DefaultDeadline = 5 * time.Minute
	// DefaultCooldownFailures is how many consecutive failures open a deployment's circuit.
	DefaultCooldownFailures = 3
	// DefaultCooldownDuration is how long an open deployment is skipped before one probe request.
	DefaultCooldownDuration = 30 * time.Second
)

// Config is the whole configuration.
type Config struct {
	Providers []Provider `yaml:"providers"`
	Models    []Model    `yaml:"models"`
	Plans     []Plan     `yaml:"plans"`
	Billing   Billing    `yaml:"billing"`
	// Quota configures admission control (reservations, rate limits).
	Quota Quota `yaml:"quota"`
	// Routing is the retry, fallback and cooldown policy for every model.
	Routing Routing `yaml:"routing"`
	// Jobs configures claims, the reaper, long polls and callbacks.
	Jobs Jobs `yaml:"jobs"`
	// Env holds values from environment variables; never read from YAML so
	// secrets stay out of files.
	Env Env `yaml:"-"`
}

// Provider is an upstream LLM endpoint.
type Provider struct {
	Name string `yaml:"name"`
	// Kind is "openai" (any OpenAI-compatible server, Azure OpenAI included),
	// "anthropic" (the Anthropic Messages API) or "echo" (built-in dev provider).
	Kind string `yaml:"kind"`
	// BaseURL is required for openai, e.g. https://api.openai.com/v1, or for
	// Azure the resource endpoint, e.g. https://my-resource.openai.azure.com.
	// For anthropic it defaults to https://api.anthropic.com.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the env var holding the key (optional: local servers need none).
	APIKeyEnv string `yaml:"api_key_env"`
	// APIVersion, on an openai provider, selects Azure OpenAI: requests go to
	// {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version},
	// where {deployment} is each deployment's model (the Azure deployment
	// name), authenticated with an api-key header. On an anthropic provider
	// it is the anthropic-version header, default 2023-06-01.
	APIVersion string `yaml:"api_version"`
	// Timeout is the per-attempt timeout, default 120s. A streamed attempt
	// must deliver its first chunk within it, and each later chunk within it
	// of the previous one (an idle timeout: a long stream that keeps flowing
	// is never cut).
	Timeout Duration `yaml:"timeout"`
}

// IsAzure reports whether the provider is Azure OpenAI (an openai provider with an api_version).
func (p Provider) IsAzure() bool { return p.Kind == KindOpenAI && p.APIVersion != "" }

// Model is a client-facing model and where it is served.
type Model struct {
	// Name is the client-facing name.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Deployments are tried by priority (lower first), spread by weight
	// within a priority; without priorities, in list order. At least one.
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
	// Model is the upstream model name (for Azure, the deployment name).
	Model string `yaml:"model"`
	// Weight spreads requests over deployments of equal priority in
	// proportion to their weights; 0 = 1.
	Weight int `yaml:"weight"`
	// Priority orders deployments: lower numbers are tried first, equal
	// numbers are chosen among by weight. Either every deployment of a
	// model sets it or none does; none = each deployment its own priority
	// in list order (plain ordered fallback).
	Priority *int `yaml:"priority"`
}

// Routing is the retry, fallback and cooldown policy (see package llm).
type Routing struct {
	// MaxAttempts bounds the provider calls of one request, first try,
	// fallbacks and retries together; default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// BaseBackoff is the backoff before the first retry round (after every
	// deployment failed once); it doubles each round, with full jitter; default 250ms.
	BaseBackoff Duration `yaml:"base_backoff"`
	// MaxBackoff caps the backoff; default 8s. A provider's Retry-After is
	// honoured even when longer, as long as it ends before the deadline.
	MaxBackoff Duration `yaml:"max_backoff"`
	// Deadline bounds one request's attempts and backoffs together; default 5m.
	// For a stream it bounds the time until the stream is established.
	Deadline Duration `yaml:"deadline"`
	// Cooldown is the per-deployment circuit breaker.
	Cooldown Cooldown `yaml:"cooldown"`
}

// Cooldown is the per-deployment circuit breaker policy.
type Cooldown struct {
	// Failures is how many consecutive failed attempts (429, 5xx, timeouts,
	// connection errors, rejected provider credentials) open the circuit; default 3.
	Failures int `yaml:"failures"`
	// Duration is how long an open deployment is skipped; afterwards one
	// probe request is let through (half-open): success closes the circuit,
	// failure opens it again. Default 30s.
	Duration Duration `yaml:"duration"`
}

// WithDefaults returns r with every unset field set to its default, for
// configs built in code rather than loaded.
func (r Routing) WithDefaults() Routing {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.BaseBackoff == 0 {
		r.BaseBackoff = Duration(DefaultBaseBackoff)
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = Duration(DefaultMaxBackoff)
	}
	if r.Deadline == 0 {
		r.Deadline = Duration(DefaultDeadline)
	}
	if r.Cooldown.Failures == 0 {
		r.Cooldown.Failures = DefaultCooldownFailures
	}
	if r.Cooldown.Duration == 0 {
		r.Cooldown.Duration = Duration(DefaultCooldownDuration)
	}
	return r
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
	// StripeMeteredPrice is the plan's metered (usage-based) Stripe price,
	// added to its checkout; usage is reported to its meter. Optional.
	StripeMeteredPrice string `yaml:"stripe_metered_price"`
	// Models lists allowed client-facing models; empty = all.
	Models            []string `yaml:"models"`
	RequestsPerMinute int64    `yaml:"requests_per_minute"`
	TokensPerMinute   int64    `yaml:"tokens_per_minute"`
	// DailyBudgetUSD and MonthlyBudgetUSD are decimal USD strings; empty = unlimited.
	DailyBudgetUSD   string `yaml:"daily_budget_usd"`
	MonthlyBudgetUSD string `yaml:"monthly_budget_usd"`

	// RunawayMaxSpendUSD is the runaway guard's ceiling: a key that spends
	// more than this within RunawayWindow is suspended until an operator
	// lifts it. Empty = no guard.
	RunawayMaxSpendUSD string `yaml:"runaway_max_spend_usd"`
	// RunawayWindow is the guard's look-back, 1m to 60m; default 5m.
	RunawayWindow Duration `yaml:"runaway_window"`

	dailyBudget, monthlyBudget money.NanoUSD
	hasDaily, hasMonthly       bool
	runaway                    money.NanoUSD
	hasRunaway                 bool
}

// Quota configures admission control.
type Quota struct {
	// DefaultMaxOutputTokens is the completion size reserved for a request
	// that sets no max_tokens on a model without max_output_tokens;
	// default 4096.
	DefaultMaxOutputTokens int64 `yaml:"default_max_output_tokens"`
	// ReservationTTL is how long a budget reservation is held when its
	// completion never finishes (a crashed executor): then it is released.
	// Default 15m, above the executor's 10m claim lease; with
	// jobs.on_expired_lease "retry", at least Jobs.MinReservationTTL.
	ReservationTTL Duration `yaml:"reservation_ttl"`
}

// Quota defaults.
const (
	DefaultMaxOutputTokens = 4096
	DefaultReservationTTL  = 15 * time.Minute
	DefaultRunawayWindow   = 5 * time.Minute
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
	// ResponseDeadline (TOLLGATE_RESPONSE_DEADLINE, default 55s, under
	// common 60 s proxy limits) is how long a synchronous request waits for
	// its answer before it is answered 202 with its job id instead.
	ResponseDeadline time.Duration
	// DatabaseQueryTimeout (TOLLGATE_DATABASE_QUERY_TIMEOUT; 0 = the
	// server's default, 30s) bounds every database statement of a serving
	// process, so a hung PostgreSQL answers 503 instead of holding requests.
	DatabaseQueryTimeout time.Duration
	// CallbackSecret (TOLLGATE_CALLBACK_SECRET) keys the HMAC signature of
	// job result callbacks; empty = callbacks are off (a callback_url is
	// refused).
	CallbackSecret string
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
		if c.Providers[i].Kind == KindAnthropic {
			if c.Providers[i].BaseURL == "" {
				c.Providers[i].BaseURL = DefaultAnthropicBaseURL
			}
			if c.Providers[i].APIVersion == "" {
				c.Providers[i].APIVersion = DefaultAnthropicVersion
			}
		}
	}
	c.Routing = c.Routing.WithDefaults()
	c.Jobs.applyDefaults()
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
	if c.Billing.GracePeriod == 0 {
		c.Billing.GracePeriod = Duration(DefaultGracePeriod)
	}
	if c.Billing.FallbackPlan == "" {
		c.Billing.FallbackPlan = DefaultFallbackPlan
	}
	if c.Billing.WebhookTolerance == 0 {
		c.Billing.WebhookTolerance = Duration(DefaultWebhookTolerance)
	}
	if c.Billing.DunningInterval == 0 {
		c.Billing.DunningInterval = Duration(DefaultDunningInterval)
	}
	if c.Quota.DefaultMaxOutputTokens == 0 {
		c.Quota.DefaultMaxOutputTokens = DefaultMaxOutputTokens
	}
	if c.Quota.ReservationTTL == 0 {
		// Retried jobs keep their reservation through every run.
		c.Quota.ReservationTTL = Duration(max(DefaultReservationTTL, c.Jobs.MinReservationTTL()))
	}
	for i := range c.Plans {
		if c.Plans[i].RunawayWindow == 0 {
			c.Plans[i].RunawayWindow = Duration(DefaultRunawayWindow)
		}
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
		ResponseDeadline:     durationOr(getenv("TOLLGATE_RESPONSE_DEADLINE"), DefaultResponseDeadline),
		DatabaseQueryTimeout: durationOr(getenv("TOLLGATE_DATABASE_QUERY_TIMEOUT"), 0),
		CallbackSecret:       getenv("TOLLGATE_CALLBACK_SECRET"),
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
	if c.Env.ResponseDeadline < 0 {
		bad("TOLLGATE_RESPONSE_DEADLINE", "must be a positive duration such as 55s")
	}
	if c.Env.DatabaseQueryTimeout < 0 {
		bad("TOLLGATE_DATABASE_QUERY_TIMEOUT", "must be a positive duration such as 30s")
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
		case KindOpenAI, KindAnthropic:
			if p.BaseURL == "" {
				bad(f+".base_url", "required for an openai provider (e.g. https://api.openai.com/v1)")
			} else if !strings.HasPrefix(p.BaseURL, "http://") && !strings.HasPrefix(p.BaseURL, "https://") {
				bad(f+".base_url", "%q must start with http:// or https://", p.BaseURL)
			}
			if strings.ContainsAny(p.APIVersion, "&#?/ ") {
				bad(f+".api_version", "%q is not a version (e.g. 2024-10-21)", p.APIVersion)
			}
		case KindEcho:
			if p.APIVersion != "" {
				bad(f+".api_version", "not used by an echo provider")
			}
		case "":
			bad(f+".kind", "required (%q, %q or %q)", KindOpenAI, KindAnthropic, KindEcho)
		default:
			bad(f+".kind", "unknown provider kind %q (want %q, %q or %q)", p.Kind, KindOpenAI, KindAnthropic, KindEcho)
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
			if (d.Priority != nil) != (m.Deployments[0].Priority != nil) {
				bad(df+".priority", "set priority on every deployment of a model or on none")
			} else if d.Priority != nil && *d.Priority < 0 {
				bad(df+".priority", "must not be negative, got %d", *d.Priority)
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
		p.runaway, p.hasRunaway = parseBudget(f+".runaway_max_spend_usd", p.RunawayMaxSpendUSD, badErr)
		if w := p.RunawayWindow.D(); w != 0 && w < time.Minute || w > time.Hour || w%time.Minute != 0 {
			bad(f+".runaway_window", "must be whole minutes from 1m to 60m, got %s", w)
		}
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
	if c.Quota.DefaultMaxOutputTokens < 0 {
		bad("quota.default_max_output_tokens", "must be positive, got %d", c.Quota.DefaultMaxOutputTokens)
	}
	if c.Quota.ReservationTTL != 0 && c.Quota.ReservationTTL < Duration(time.Minute) {
		bad("quota.reservation_ttl", "must be at least 1m, got %s", c.Quota.ReservationTTL.D())
	}
	switch b.Unit {
	case UnitTokens, UnitCostNanoUSD:
	default:
		bad("billing.unit", "unknown unit %q (want %q or %q)", b.Unit, UnitTokens, UnitCostNanoUSD)
	}
	errs = append(errs, c.validateBillingLifecycle()...)
	errs = append(errs, c.validateJobs()...)

	r := c.Routing
	if r.MaxAttempts < 1 {
		bad("routing.max_attempts", "must be at least 1, got %d", r.MaxAttempts)
	}
	if r.BaseBackoff < 0 {
		bad("routing.base_backoff", "must not be negative, got %s", r.BaseBackoff.D())
	}
	if r.MaxBackoff < r.BaseBackoff {
		bad("routing.max_backoff", "must be at least base_backoff (%s), got %s", r.BaseBackoff.D(), r.MaxBackoff.D())
	}
	if r.Deadline <= 0 {
		bad("routing.deadline", "must be positive, got %s", r.Deadline.D())
	}
	if r.Cooldown.Failures < 1 {
		bad("routing.cooldown.failures", "must be at least 1, got %d", r.Cooldown.Failures)
	}
	if r.Cooldown.Duration <= 0 {
		bad("routing.cooldown.duration", "must be positive, got %s", r.Cooldown.Duration.D())
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

// RunawayCeiling returns the runaway guard's spend ceiling over
// RunawayWindow, and false when the plan has no guard. Valid after Validate.
func (p Plan) RunawayCeiling() (money.NanoUSD, bool) { return p.runaway, p.hasRunaway }

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

// DefaultResponseDeadline is Env.ResponseDeadline's default.
const DefaultResponseDeadline = 55 * time.Second

// durationOr parses s as a Go duration, or returns def when s is empty or
// not a positive duration (Validate reports a bad value).
func durationOr(s string, def time.Duration) time.Duration {
	if s = strings.TrimSpace(s); s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return -1
	}
	return d
}

// validateBillingLifecycle checks the checkout, webhook and dunning settings.
func (c *Config) validateBillingLifecycle() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	b := c.Billing
	if b.GracePeriod < 0 {
		bad("billing.grace_period", "must not be negative, got %s", b.GracePeriod.D())
	}
	if b.WebhookTolerance <= 0 {
		bad("billing.webhook_tolerance", "must be positive, got %s", b.WebhookTolerance.D())
	}
	if b.StripeRateLimit < 0 || b.StripeRateLimit > 1000 {
		bad("billing.stripe_rate_limit", "must be between 0 (default) and 1000 calls per second, got %v", b.StripeRateLimit)
	}
	if b.DunningInterval <= 0 {
		bad("billing.dunning_interval", "must be positive, got %s", b.DunningInterval.D())
	}
	if len(c.Plans) > 0 {
		if _, ok := c.Plan(b.FallbackPlan); !ok {
			bad("billing.fallback_plan", "%q is not a configured plan", b.FallbackPlan)
		}
	}
	for _, u := range []struct{ field, v string }{
		{"billing.checkout_success_url", b.CheckoutSuccessURL}, {"billing.checkout_cancel_url", b.CheckoutCancelURL}, {"billing.portal_return_url", b.PortalReturnURL},
	} {
		if u.v != "" && !strings.HasPrefix(u.v, "http://") && !strings.HasPrefix(u.v, "https://") {
			bad(u.field, "%q must start with http:// or https://", u.v)
		}
	}
	prices := map[string]string{}
	for i, p := range c.Plans {
		for _, pr := range []struct{ field, id string }{{"stripe_price", p.StripePrice}, {"stripe_metered_price", p.StripeMeteredPrice}} {
			if pr.id == "" {
				continue
			}
			if other, ok := prices[pr.id]; ok && other != p.Name {
				bad(fmt.Sprintf("plans[%d].%s", i, pr.field), "price %q is also plan %q's: a price must map to one plan", pr.id, other)
			}
			prices[pr.id] = p.Name
		}
		if p.StripeMeteredPrice != "" && p.StripePrice == "" {
			bad(fmt.Sprintf("plans[%d].stripe_price", i), "required with stripe_metered_price")
		}
	}
	return errs
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
