package config

import (
	"fmt"

	"github.com/tollgate/tollgate/money"
)

// Model is a client-facing model and where it is served.
type Model struct {
	// Name is the client-facing name.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Deployments are tried by priority (lower first), spread by weight
	// within a priority; without priorities, in list order. At least one.
	Deployments []Deployment `yaml:"deployments"`
	// Price is the model's price, parsed from the YAML's price (a
	// PriceConfig) when the configuration is parsed.
	Price money.Price `yaml:"-"`
	// MaxOutputTokens is an optional cap on completion tokens (0 = none).
	MaxOutputTokens int64 `yaml:"max_output_tokens"`
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

// PriceConfig is a model's price as written in YAML: decimal USD strings
// per million tokens.
type PriceConfig struct {
	InputPerMillion  string `yaml:"input_per_million"`
	OutputPerMillion string `yaml:"output_per_million"`
}

// modelDoc is a model as written in YAML.
type modelDoc struct {
	Model `yaml:",inline"`
	Price PriceConfig `yaml:"price"`
}

// parseModels parses the models' prices; one that does not parse is a
// problem, its price left zero.
func parseModels(docs []modelDoc, bad *problems) []Model {
	if docs == nil {
		return nil
	}
	models := make([]Model, len(docs))
	for i, d := range docs {
		m := d.Model
		price, err := money.ParsePrice(d.Price.InputPerMillion, d.Price.OutputPerMillion)
		if err != nil {
			bad.wrap(fmt.Sprintf("models[%d].price", i), "bad price", err)
		}
		m.Price = price
		models[i] = m
	}
	return models
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

// ParsedPrice returns the model's price (Price).
func (m Model) ParsedPrice() money.Price { return m.Price }

// validateModels checks the models against the providers' names and
// returns the models' names.
func validateModels(ms []Model, providers map[string]bool, bad *problems) map[string]bool {
	names := map[string]bool{}
	if len(ms) == 0 {
		bad.add("models", "at least one model is required")
	}
	for i, m := range ms {
		f := fmt.Sprintf("models[%d]", i)
		checkName(f, "model", m.Name, names, bad)
		if len(m.Deployments) == 0 {
			bad.add(f+".deployments", "at least one deployment is required")
		}
		for j, d := range m.Deployments {
			d.validate(fmt.Sprintf("%s.deployments[%d]", f, j), providers, m.Deployments[0].Priority != nil, bad)
		}
		// A price set in code obeys the rules of a parsed one: checked by
		// parsing its decimal form again.
		if _, err := money.ParsePrice(m.Price.InputPerMillion.USD(), m.Price.OutputPerMillion.USD()); err != nil {
			bad.wrap(f+".price", "bad price", err)
		}
		if m.MaxOutputTokens < 0 {
			bad.add(f+".max_output_tokens", "must not be negative, got %d", m.MaxOutputTokens)
		}
	}
	return names
}

// validate checks one deployment; prioritized is whether its model's
// first deployment sets a priority (then all must).
func (d Deployment) validate(df string, providers map[string]bool, prioritized bool, bad *problems) {
	if d.Provider == "" {
		bad.add(df+".provider", "required")
	} else if !providers[d.Provider] {
		bad.add(df+".provider", "unknown provider %q", d.Provider)
	}
	if d.Model == "" {
		bad.add(df+".model", "required (the upstream model name)")
	}
	if d.Weight < 0 {
		bad.add(df+".weight", "must not be negative, got %d", d.Weight)
	}
	if (d.Priority != nil) != prioritized {
		bad.add(df+".priority", "set priority on every deployment of a model or on none")
	} else if d.Priority != nil && *d.Priority < 0 {
		bad.add(df+".priority", "must not be negative, got %d", *d.Priority)
	}
}
