// Package config loads Tollgate's configuration: one YAML file (providers,
// models and their prices, plans, billing) plus environment variables for
// secrets and addresses.
//
// Loading has two steps, in the style of Watermill's configs. Parsing
// (Parse, Load, Default) turns the YAML and the environment into typed
// values: durations, prices and budgets in money, defaults filled in.
// Validate then only checks those values, all at once, and changes
// nothing: a Config built in code is validated the same way. Each area
// has its file: env.go (environment: addresses, database, secrets),
// providers.go, routing.go, models.go (models and prices), plans.go
// (plans, budgets and quota), billing.go, jobs.go.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/tollgate/tollgate/money"
)

// Config is the whole configuration.
type Config struct {
	Providers []Provider `yaml:"providers"`
	// Models are the YAML's models key; each one's price (a PriceConfig
	// in the file) is parsed into Model.Price.
	Models []Model `yaml:"-"`
	// Plans are the YAML's plans key; each one's daily_budget_usd,
	// monthly_budget_usd and runaway_max_spend_usd are parsed into Budgets.
	Plans   []Plan  `yaml:"-"`
	Billing Billing `yaml:"billing"`
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

// document is the YAML file: Config with its models and plans as written
// (prices and budgets as decimal strings, parsed by decode).
type document struct {
	Config `yaml:",inline"`
	Models []modelDoc `yaml:"models"`
	Plans  []planDoc  `yaml:"plans"`
}

// Load reads the YAML file at path (path "" = Default()), reads Env from
// getenv, fills defaults and validates. Unknown YAML keys are an error.
// Every problem is reported at once: values that do not parse (a price,
// a budget, a duration in the environment) with those Validate finds.
func Load(path string, getenv func(string) string) (*Config, error) {
	var cfg *Config
	var bad problems
	if path == "" {
		cfg = Default()
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if cfg, bad, err = decode(b); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	var envBad problems
	cfg.Env, envBad = parseEnv(getenv)
	bad = append(bad, envBad...)
	if err := errors.Join(append(bad, cfg.Validate())...); err != nil {
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

// Parse decodes YAML into a Config, parses its prices and budgets and
// applies defaults, without validating and without reading the
// environment. A price or budget that does not parse is an error (joined
// *ValidationError, each naming its field).
func Parse(b []byte) (*Config, error) {
	cfg, bad, err := decode(b)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, errors.Join(bad...)
	}
	return cfg, nil
}

// decode is Parse returning the values that do not parse as problems
// beside the Config (where they are left zero), so that Load can report
// them with Validate's. err is a YAML error.
func decode(b []byte) (_ *Config, bad problems, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a typo in a key must fail loudly, not silently use a default
	var doc document
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, errors.New("empty config file")
		}
		return nil, nil, fmt.Errorf("parse YAML: %w", err)
	}
	cfg := doc.Config
	cfg.Models = parseModels(doc.Models, &bad)
	cfg.Plans = parsePlans(doc.Plans, &bad)
	cfg.setDefaults()
	return &cfg, bad, nil
}

// setDefaults fills every unset field with its default.
func (c *Config) setDefaults() {
	for i := range c.Providers {
		c.Providers[i].setDefaults()
	}
	c.Routing = c.Routing.WithDefaults()
	c.Jobs.setDefaults()
	c.Billing.setDefaults()
	// After Jobs: retried jobs keep their reservation through every run.
	c.Quota.setDefaults(c.Jobs)
	for i := range c.Plans {
		c.Plans[i].setDefaults()
	}
}

// Validate checks the configuration and changes nothing. It returns all
// problems joined (errors.Join of *ValidationError), each naming its
// field.
func (c Config) Validate() error {
	var bad problems
	c.Env.validate(&bad)
	providers := validateProviders(c.Providers, &bad)
	models := validateModels(c.Models, providers, &bad)
	validatePlans(c.Plans, models, &bad)
	c.Billing.validate(c.Plans, &bad)
	c.Quota.validate(&bad)
	c.Jobs.validate(c.Quota, &bad)
	c.Routing.validate(&bad)
	return errors.Join(bad...)
}

// Default returns the built-in configuration: the echo development provider
// and model, and free and pro plans. It is not yet validated.
func Default() *Config {
	const usd money.NanoUSD = 1_000_000_000
	cfg := &Config{
		Providers: []Provider{{Name: "echo", Kind: KindEcho}},
		Models: []Model{{
			Name:        "echo",
			Description: "development model: answers with your last message; no provider key needed",
			Deployments: []Deployment{{Provider: "echo", Model: "echo"}},
			// Nonzero so the billing path has something to show in development:
			// 0.50 and 1.50 USD per million tokens.
			Price: money.Price{InputPerMillion: usd / 2, OutputPerMillion: 3 * usd / 2},
		}},
		Plans: []Plan{
			{Name: "free", RequestsPerMinute: 60, TokensPerMinute: 100_000, Daily: BudgetOf(1 * usd), Monthly: BudgetOf(10 * usd)},
			{Name: "pro", RequestsPerMinute: 600, TokensPerMinute: 2_000_000, Daily: BudgetOf(100 * usd), Monthly: BudgetOf(1000 * usd)},
		},
	}
	cfg.setDefaults()
	return cfg
}
