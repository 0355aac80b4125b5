package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// DunningConfig configures a Dunning loop.
type DunningConfig struct {
	Service *commands.Service
	// ReadModels is queried for accounts whose grace period may have
	// ended (records.DunningCandidates).
	ReadModels   projections.Querier
	FallbackPlan string
	// Interval is the pause between passes; DefaultDunningInterval when zero.
	Interval   time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultDunningInterval is Dunning's default pause between passes.
const DefaultDunningInterval = time.Minute

// Dunning downgrades accounts whose grace period after a failed payment
// ended: it finds candidates in the dunning read model and lets DecideDowngrade
// judge each from its events and the clock.
type Dunning struct {
	cfg        DunningConfig
	log        *slog.Logger
	downgraded prometheus.Counter
	errors     prometheus.Counter
}

// NewDunning returns a Dunning loop.
func NewDunning(cfg DunningConfig) (*Dunning, error) {
	if cfg.Service == nil || cfg.ReadModels == nil || cfg.FallbackPlan == "" {
		return nil, errors.New("billing dunning: Service, ReadModels and FallbackPlan are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultDunningInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dunning{cfg: cfg, log: cfg.Logger.With("component", "billing-dunning"),
		downgraded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_billing_accounts_downgraded_total",
			Help: "Accounts downgraded to the fallback plan after their grace period ended.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_billing_dunning_errors_total",
			Help: "Errors of the dunning loop.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{d.downgraded, d.errors} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("billing dunning: register metrics: %w", err)
			}
		}
	}
	return d, nil
}

// Run downgrades due accounts every Interval until ctx ends.
func (d *Dunning) Run(ctx context.Context) error {
	for {
		if n, err := d.RunOnce(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("dunning pass failed", "downgraded", n, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d.cfg.Interval):
		}
	}
}

// RunOnce downgrades every account whose grace period ended by now and
// returns how many it downgraded.
func (d *Dunning) RunOnce(ctx context.Context) (int, error) {
	now := d.cfg.Now()
	// A failure not followed by a payment or a downgrade, whose grace
	// ended: a candidate. DecideDowngrade has the last word.
	ids, err := records.DunningCandidates(ctx, d.cfg.ReadModels, now)
	if err != nil {
		d.errors.Inc()
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		before, err := d.cfg.Service.Account(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		md := events.Metadata{AccountID: id, Actor: "system:billing-dunning"}
		after, err := d.cfg.Service.Downgrade(ctx, md, id, now, d.cfg.FallbackPlan)
		if err != nil {
			errs = append(errs, fmt.Errorf("downgrade %s: %w", id, err))
			continue
		}
		if before.Billing.DowngradedTo == "" && after.Billing.DowngradedTo != "" {
			n++
			d.downgraded.Inc()
			d.log.Info("account downgraded after its grace period", "account_id", id, "from", after.Plan, "to", after.Billing.DowngradedTo,
				"grace_until", after.Billing.GraceUntil)
		}
	}
	if err := errors.Join(errs...); err != nil {
		d.errors.Inc()
		return n, err
	}
	return n, nil
}
