package config

import (
	"fmt"
	"time"

	"github.com/tollgate/tollgate/money"
)

// Quota and plan defaults.
const (
	DefaultMaxOutputTokens = 4096
	DefaultReservationTTL  = 15 * time.Minute
	DefaultRunawayWindow   = 5 * time.Minute
)

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
	// Daily and Monthly are the budgets, parsed from daily_budget_usd and
	// monthly_budget_usd (decimal USD strings; empty = unlimited).
	Daily   Budget `yaml:"-"`
	Monthly Budget `yaml:"-"`
	// RunawayMaxSpend is the runaway guard's ceiling, parsed from
	// runaway_max_spend_usd: a key that spends more than this within
	// RunawayWindow is suspended until an operator lifts it. Unset = no
	// guard.
	RunawayMaxSpend Budget `yaml:"-"`
	// RunawayWindow is the guard's look-back, 1m to 60m; default 5m.
	RunawayWindow Duration `yaml:"runaway_window"`
}

// Budget is an optional amount: Set false means none (unlimited), while a
// set zero is a real (zero) budget.
type Budget struct {
	Amount money.NanoUSD
	Set    bool
}

// BudgetOf is the budget of amount n.
func BudgetOf(n money.NanoUSD) Budget { return Budget{Amount: n, Set: true} }

// planDoc is a plan as written in YAML.
type planDoc struct {
	Plan `yaml:",inline"`
	// DailyBudgetUSD and MonthlyBudgetUSD are decimal USD strings; empty = unlimited.
	DailyBudgetUSD   string `yaml:"daily_budget_usd"`
	MonthlyBudgetUSD string `yaml:"monthly_budget_usd"`
	// RunawayMaxSpendUSD is a decimal USD string; empty = no guard.
	RunawayMaxSpendUSD string `yaml:"runaway_max_spend_usd"`
}

// parsePlans parses the plans' budgets; one that does not parse is a
// problem, the budget left unset.
func parsePlans(docs []planDoc, bad *problems) []Plan {
	if docs == nil {
		return nil
	}
	plans := make([]Plan, len(docs))
	for i, d := range docs {
		p := d.Plan
		f := fmt.Sprintf("plans[%d]", i)
		p.Daily = parseBudget(f+".daily_budget_usd", d.DailyBudgetUSD, bad)
		p.Monthly = parseBudget(f+".monthly_budget_usd", d.MonthlyBudgetUSD, bad)
		p.RunawayMaxSpend = parseBudget(f+".runaway_max_spend_usd", d.RunawayMaxSpendUSD, bad)
		plans[i] = p
	}
	return plans
}

// parseBudget parses a budget: an empty string means unlimited, while
// "0" is a real (zero) budget.
func parseBudget(field, s string, bad *problems) Budget {
	if s == "" {
		return Budget{}
	}
	n, err := money.ParseUSD(s)
	if err != nil {
		bad.wrap(field, "bad budget", err)
		return Budget{}
	}
	return BudgetOf(n)
}

func (p *Plan) setDefaults() {
	if p.RunawayWindow == 0 {
		p.RunawayWindow = Duration(DefaultRunawayWindow)
	}
}

// Plan returns the plan with the given name.
func (c *Config) Plan(name string) (Plan, bool) { return planNamed(c.Plans, name) }

func planNamed(plans []Plan, name string) (Plan, bool) {
	for _, p := range plans {
		if p.Name == name {
			return p, true
		}
	}
	return Plan{}, false
}

// DailyBudget returns the daily budget and false when the plan has none
// (unlimited).
func (p Plan) DailyBudget() (money.NanoUSD, bool) { return p.Daily.Amount, p.Daily.Set }

// MonthlyBudget returns the monthly budget and false when the plan has
// none (unlimited).
func (p Plan) MonthlyBudget() (money.NanoUSD, bool) { return p.Monthly.Amount, p.Monthly.Set }

// RunawayCeiling returns the runaway guard's spend ceiling over
// RunawayWindow, and false when the plan has no guard.
func (p Plan) RunawayCeiling() (money.NanoUSD, bool) {
	return p.RunawayMaxSpend.Amount, p.RunawayMaxSpend.Set
}

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

// validatePlans checks the plans against the models' names.
func validatePlans(ps []Plan, models map[string]bool, bad *problems) {
	names := map[string]bool{}
	for i, p := range ps {
		f := fmt.Sprintf("plans[%d]", i)
		checkName(f, "plan", p.Name, names, bad)
		for j, name := range p.Models {
			if !models[name] {
				bad.add(fmt.Sprintf("%s.models[%d]", f, j), "unknown model %q", name)
			}
		}
		if p.RequestsPerMinute < 0 {
			bad.add(f+".requests_per_minute", "must not be negative, got %d", p.RequestsPerMinute)
		}
		if p.TokensPerMinute < 0 {
			bad.add(f+".tokens_per_minute", "must not be negative, got %d", p.TokensPerMinute)
		}
		for _, b := range []struct {
			field string
			b     Budget
		}{{".daily_budget_usd", p.Daily}, {".monthly_budget_usd", p.Monthly}, {".runaway_max_spend_usd", p.RunawayMaxSpend}} {
			if b.b.Set && b.b.Amount < 0 {
				bad.add(f+b.field, "must not be negative, got %s", b.b.Amount.USD())
			}
		}
		if w := p.RunawayWindow.D(); w != 0 && w < time.Minute || w > time.Hour || w%time.Minute != 0 {
			bad.add(f+".runaway_window", "must be whole minutes from 1m to 60m, got %s", w)
		}
	}
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

// setDefaults fills the defaults; the reservation TTL's covers the
// retries jobs allows.
func (q *Quota) setDefaults(jobs Jobs) {
	if q.DefaultMaxOutputTokens == 0 {
		q.DefaultMaxOutputTokens = DefaultMaxOutputTokens
	}
	if q.ReservationTTL == 0 {
		q.ReservationTTL = Duration(max(DefaultReservationTTL, jobs.MinReservationTTL()))
	}
}

func (q Quota) validate(bad *problems) {
	if q.DefaultMaxOutputTokens < 0 {
		bad.add("quota.default_max_output_tokens", "must be positive, got %d", q.DefaultMaxOutputTokens)
	}
	if q.ReservationTTL != 0 && q.ReservationTTL < Duration(time.Minute) {
		bad.add("quota.reservation_ttl", "must be at least 1m, got %s", q.ReservationTTL.D())
	}
}
