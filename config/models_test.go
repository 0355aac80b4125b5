package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/money"
)

func TestLoadExample(t *testing.T) {
	t.Parallel()
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

func TestValidateModels(t *testing.T) {
	t.Parallel()
	checkValidateErrors(t, []validateCase{
		{"no models", func(c *Config) { c.Models = nil; c.Plans = nil }, "models", "at least one model"},
		{"model without name", func(c *Config) { c.Models[0].Name = "" }, "models[0].name", "required"},
		{"duplicate model", func(c *Config) { c.Models = append(c.Models, c.Models[0]) }, "models[1].name", `duplicate model name "m"`},
		{"no deployments", func(c *Config) { c.Models[0].Deployments = nil }, "models[0].deployments", "at least one deployment"},
		{"deployment unknown provider", func(c *Config) { c.Models[0].Deployments[0].Provider = "azure" }, "models[0].deployments[0].provider", `unknown provider "azure"`},
		{"deployment without provider", func(c *Config) { c.Models[0].Deployments[0].Provider = "" }, "models[0].deployments[0].provider", "required"},
		{"deployment without model", func(c *Config) { c.Models[0].Deployments[0].Model = "" }, "models[0].deployments[0].model", "required"},
		{"negative weight", func(c *Config) { c.Models[0].Deployments[0].Weight = -1 }, "models[0].deployments[0].weight", "must not be negative"},
		{"negative max output", func(c *Config) { c.Models[0].MaxOutputTokens = -5 }, "models[0].max_output_tokens", "must not be negative"},
		// A price set in code is held to the rules of a parsed one.
		{"price set in code rounds", func(c *Config) { c.Models[0].Price.InputPerMillion = 123_400 }, "models[0].price", "not a whole number of nano-USD per token"},
		{"price set in code negative", func(c *Config) { c.Models[0].Price.OutputPerMillion = -1_000_000 }, "models[0].price", "negative"},
	})
}

// TestParsePrices: a price that does not parse is refused by Parse,
// naming the model's price.
func TestParsePrices(t *testing.T) {
	t.Parallel()
	checkParseErrors(t, []parseCase{
		{name: "price rounds", old: `input_per_million: "0.15"`, new: `input_per_million: "0.1234"`, field: "models[0].price", msg: "not a whole number of nano-USD per token"},
		{name: "price missing", old: `, output_per_million: "0.60"`, new: ``, field: "models[0].price", msg: "empty"},
		{name: "price negative", old: `output_per_million: "0.60"`, new: `output_per_million: "-1"`, field: "models[0].price", msg: "negative"},
	})
}

func TestPriceErrorWrapsMoney(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(strings.Replace(validYAML, `input_per_million: "0.15"`, `input_per_million: "0.0001"`, 1)))
	if !errors.Is(err, money.ErrInexactPrice) {
		t.Fatalf("error %v does not wrap money.ErrInexactPrice", err)
	}
	cfg, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Models[0].Price.InputPerMillion = 100 // 0.0000001 USD per million tokens
	if err := cfg.Validate(); !errors.Is(err, money.ErrInexactPrice) {
		t.Fatalf("error %v does not wrap money.ErrInexactPrice", err)
	}
}
