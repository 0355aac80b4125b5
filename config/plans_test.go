package config

import (
	"strings"
	"testing"
)

func TestValidatePlans(t *testing.T) {
	t.Parallel()
	checkValidateErrors(t, []validateCase{
		{"plan without name", func(c *Config) { c.Plans[0].Name = "" }, "plans[0].name", "required"},
		{"duplicate plan", func(c *Config) { c.Plans = append(c.Plans, c.Plans[0]) }, "plans[1].name", `duplicate plan name "free"`},
		{"plan unknown model", func(c *Config) { c.Plans[0].Models = []string{"m", "gpt-9"} }, "plans[0].models[1]", `unknown model "gpt-9"`},
		{"negative rpm", func(c *Config) { c.Plans[0].RequestsPerMinute = -1 }, "plans[0].requests_per_minute", "must not be negative"},
		{"negative tpm", func(c *Config) { c.Plans[0].TokensPerMinute = -1 }, "plans[0].tokens_per_minute", "must not be negative"},
		{"negative budget set in code", func(c *Config) { c.Plans[0].Daily = BudgetOf(-1) }, "plans[0].daily_budget_usd", "must not be negative"},
	})
}

// TestParseBudgets: a budget that does not parse is refused by Parse,
// naming the plan's field.
func TestParseBudgets(t *testing.T) {
	t.Parallel()
	checkParseErrors(t, []parseCase{
		{name: "bad daily budget", old: `daily_budget_usd: "1"`, new: `daily_budget_usd: "1e3"`, field: "plans[0].daily_budget_usd", msg: "exponent"},
		{name: "bad monthly budget", old: `daily_budget_usd: "1"`, new: `daily_budget_usd: "1", monthly_budget_usd: "ten"`, field: "plans[0].monthly_budget_usd", msg: "bad budget"},
	})
}

func TestZeroBudgetIsNotUnlimited(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(strings.Replace(validYAML, `daily_budget_usd: "1"`, `daily_budget_usd: "0"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
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
