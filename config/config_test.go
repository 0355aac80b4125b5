package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/money"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefault(t *testing.T) {
	t.Parallel()
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

func TestLoadFromEnv(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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

// TestLoadReportsEveryProblem: a price that does not parse is reported
// with the problems Validate finds, as one error.
func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "bad.yaml")
	body := strings.Replace(validYAML, `input_per_million: "0.15"`, `input_per_million: "0.1234"`, 1) + "billing: {unit: requests}\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, env(map[string]string{"TOLLGATE_RESPONSE_DEADLINE": "soon"}))
	for _, field := range []string{"models[0].price", "billing.unit", "TOLLGATE_RESPONSE_DEADLINE"} {
		if !hasProblem(err, field, "") {
			t.Errorf("want a problem on %s, got: %v", field, err)
		}
	}
}

// TestValidateChangesNothing: Validate only checks, so a Config's values
// are the same before and after it (what Parse gave is what callers use).
func TestValidateChangesNothing(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	before := *cfg
	before.Models = append([]Model(nil), cfg.Models...)
	before.Plans = append([]Plan(nil), cfg.Plans...)
	if m, _ := cfg.Model("m"); m.ParsedPrice() != (money.Price{InputPerMillion: 150_000_000, OutputPerMillion: 600_000_000}) {
		t.Errorf("price before Validate = %+v", m.ParsedPrice())
	}
	if b, ok := cfg.Plans[0].DailyBudget(); !ok || b != 1_000_000_000 {
		t.Errorf("budget before Validate = %d, %v", b, ok)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*cfg, before) {
		t.Errorf("Validate changed the config:\n%+v\nwas\n%+v", *cfg, before)
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

// validateCase is one edit of validYAML's config that Validate must
// refuse with a problem on field whose text contains msg.
type validateCase struct {
	name  string
	edit  func(c *Config)
	field string
	msg   string
}

func checkValidateErrors(t *testing.T, tests []validateCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
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
			if !hasProblem(err, tt.field, tt.msg) {
				t.Fatalf("want field %s with %q, got: %v", tt.field, tt.msg, err)
			}
		})
	}
}

// parseCase is one edit of validYAML's text (old replaced by new) that
// Parse must refuse with a problem on field whose text contains msg.
type parseCase struct {
	name, old, new string
	field, msg     string
}

func checkParseErrors(t *testing.T, tests []parseCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := strings.Replace(validYAML, tt.old, tt.new, 1)
			if body == validYAML {
				t.Fatalf("%q is not in validYAML", tt.old)
			}
			_, err := Parse([]byte(body))
			if err == nil {
				t.Fatal("Parse accepted the config")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			if !hasProblem(err, tt.field, tt.msg) {
				t.Fatalf("want field %s with %q, got: %v", tt.field, tt.msg, err)
			}
		})
	}
}

// hasProblem reports whether err (an errors.Join, possibly wrapped) holds
// a *ValidationError on field whose text contains msg ("" = any).
func hasProblem(err error, field, msg string) bool {
	if ve, ok := err.(*ValidationError); ok && ve.Field == field && strings.Contains(ve.Error(), msg) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if hasProblem(e, field, msg) {
				return true
			}
		}
	case interface{ Unwrap() error }:
		return hasProblem(u.Unwrap(), field, msg)
	}
	return false
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
