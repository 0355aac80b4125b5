package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/config"
	quotastate "github.com/tollgate/tollgate/quota/state"
)

// BudgetUse sums, per plan, what its accounts used in a period
// ("day:YYYY-MM-DD" or "month:YYYY-MM"): quotastate.BudgetUseByPlan on
// the read models' pool.
type BudgetUse func(ctx context.Context, period string) ([]quotastate.PlanBudgetUse, error)

// WatchPlanBudgets keeps tollgate_quota_budget_remaining_nano_usd{plan,
// period}: each plan's budget times its accounts, less what they used, for
// today and this month, from use, now and every interval until ctx ends.
func WatchPlanBudgets(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, use BudgetUse, logger *slog.Logger, every time.Duration) error {
	remaining := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tollgate_quota_budget_remaining_nano_usd",
		Help: "Budget left to the accounts of each plan in the current period (day, month), in nano-USD; absent for plans without that budget.",
	}, []string{"plan", "period"})
	if err := reg.Register(remaining); err != nil {
		return fmt.Errorf("quota metrics: %w", err)
	}
	update := func() {
		now := time.Now().UTC()
		for _, p := range []struct {
			label, period string
			budget        func(config.Plan) (int64, bool)
		}{
			{"day", "day:" + now.Format(time.DateOnly), func(p config.Plan) (int64, bool) { b, ok := p.DailyBudget(); return int64(b), ok }},
			{"month", "month:" + now.Format("2006-01"), func(p config.Plan) (int64, bool) { b, ok := p.MonthlyBudget(); return int64(b), ok }},
		} {
			uses, err := use(ctx, p.period)
			if err != nil {
				logger.Warn("plan budget metric", "error", err)
				return
			}
			for _, u := range uses {
				plan, ok := cfg.Plan(u.Plan)
				if !ok {
					continue
				}
				if b, ok := p.budget(plan); ok {
					remaining.WithLabelValues(u.Plan, p.label).Set(float64(b*u.Accounts - u.Used))
				}
			}
		}
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			update()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}
