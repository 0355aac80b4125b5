package config_test

import (
	"fmt"

	"github.com/tollgate/tollgate/config"
)

// An operator's setup: Parse turns the YAML into typed values (the price
// and the budget in money, defaults filled in), Validate checks them.
func ExampleParse() {
	cfg, err := config.Parse([]byte(`
providers:
  - {name: openai, kind: openai, base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY}
models:
  - name: gpt-4o-mini
    deployments: [{provider: openai, model: gpt-4o-mini}]
    price: {input_per_million: "0.15", output_per_million: "0.60"}
plans:
  - {name: free, requests_per_minute: 60, daily_budget_usd: "1.00"}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := cfg.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	m, _ := cfg.Model("gpt-4o-mini")
	cost, _ := m.Price.Cost(1000, 500)
	free, _ := cfg.Plan("free")
	daily, _ := free.DailyBudget()
	p, _ := cfg.Provider("openai")
	fmt.Println("1000 prompt + 500 completion tokens cost", cost)
	fmt.Println("free plan's daily budget", daily)
	fmt.Println("provider timeout", p.Timeout.D())
	// Output:
	// 1000 prompt + 500 completion tokens cost $0.000450000
	// free plan's daily budget $1.000000000
	// provider timeout 2m0s
}

// Every problem is reported at once, each naming its field.
func ExampleConfig_Validate() {
	cfg := config.Default()
	cfg.Billing.Unit = "requests"
	cfg.Routing.MaxAttempts = -1
	fmt.Println(cfg.Validate())
	// Output:
	// billing.unit: unknown unit "requests" (want "tokens" or "cost_nano_usd")
	// routing.max_attempts: must be at least 1, got -1
}
