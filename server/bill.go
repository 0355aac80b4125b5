package server

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/projections"
)

// startBilling runs the bill role: the reporter, which sends due billing
// records to Stripe (off without STRIPE_SECRET_KEY), and dunning, which
// downgrades accounts whose grace period ended. Each runs once across
// replicas (a leader lock).
func (w *wiring) startBilling() error {
	cfg := w.cfg
	if cfg.Env.StripeSecretKey == "" {
		w.logger.Info("billing reporter off: STRIPE_SECRET_KEY is not set")
	} else {
		rep, err := stripe.NewReporter(stripe.ReporterConfig{
			Store:               w.Store,
			Due:                 dueRecords(w.Pool, cfg.Billing.ReportDelay.D()),
			Stripe:              stripe.NewStripeClient(cfg.Env.StripeSecretKey, cfg.Env.StripeAPIBase, 0),
			EventName:           cfg.Env.StripeMeterEventName,
			Interval:            firstNonZero(w.opts.BillingInterval, cfg.Billing.ReportInterval.D()),
			RateLimit:           cfg.Billing.StripeRateLimit,
			Logger:              w.logger,
			Registerer:          w.reg,
			AfterStripeAccepted: w.opts.BillingAfterStripeAccepted,
		})
		if err != nil {
			return err
		}
		w.goRun("billing reporter", w.leader(w.run, "tollgate:billing-reporter", rep.Run))
	}
	dunning, err := stripe.NewDunning(stripe.DunningConfig{
		Service: w.svc, ReadModels: w.Pool, FallbackPlan: cfg.Billing.FallbackPlan,
		Interval: cfg.Billing.DunningInterval.D(), Logger: w.logger, Registerer: w.reg,
	})
	if err != nil {
		return err
	}
	w.goRun("billing dunning", w.leader(w.run, "tollgate:billing-dunning", dunning.Run))
	return nil
}

// dueRecords adapts the billing read model to the reporter.
func dueRecords(pool *pgxpool.Pool, delay time.Duration) stripe.DueRecords {
	return func(ctx context.Context, now time.Time, limit int) ([]billing.Record, error) {
		return records.Due(ctx, pool, projections.LiveSchema, now, delay, limit)
	}
}

func firstNonZero(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}
