package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/completion/callbacks"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/handlers"
)

// startJobs runs the worker role's background duties: the reaper, which
// ends requests whose executor died, and the callback dispatcher. Both are
// safe to run on every worker at once, so they need no leader.
func (w *wiring) startJobs() error {
	ctx, cfg, svc, reg, logger := w.run, w.cfg, w.svc, w.reg, w.logger
	reaper, err := execution.NewReaper(execution.ReaperConfig{
		Service: svc, Instance: cfg.Env.InstanceID, Interval: cfg.Jobs.ReaperInterval.D(), Logger: logger, Registry: reg, Released: w.settle,
		Retry: cfg.Jobs.Retry(), MaxRetries: cfg.Jobs.MaxRetries, Lease: cfg.Jobs.Lease.D(),
		Expired: func(ctx context.Context, now time.Time, limit int) ([]string, error) {
			return jobs.ExpiredLeases(ctx, w.Pool, now, limit)
		},
	})
	if err != nil {
		return err
	}
	w.goRun("reaper", func() error { return reaper.Run(ctx) })
	if cfg.Env.CallbackSecret == "" {
		logger.Info("job callbacks off: TOLLGATE_CALLBACK_SECRET is not set")
		return nil
	}
	cb := cfg.Jobs.Callbacks
	disp, err := callbacks.NewDispatcher(callbacks.Config{
		Service: svc, Pool: w.Pool, Render: handlers.JobBody, Secret: []byte(cfg.Env.CallbackSecret),
		Instance: cfg.Env.InstanceID, AllowPrivateNetworks: cb.AllowPrivateNetworks, MaxAttempts: cb.MaxAttempts,
		InitialBackoff: cb.InitialBackoff.D(), MaxBackoff: cb.MaxBackoff.D(), Timeout: cb.Timeout.D(),
		Logger: logger, Registry: reg,
	})
	if err != nil {
		return err
	}
	w.goRun("callbacks", func() error { return disp.Run(ctx) })
	return nil
}

// jobsDeps is what the API's job endpoints need.
func jobsDeps(cfg *config.Config, reg prometheus.Registerer) (handlers.JobsDeps, error) {
	g, err := handlers.NewWaitersGauge(reg)
	if err != nil {
		return handlers.JobsDeps{}, err
	}
	return handlers.JobsDeps{MaxWait: cfg.Jobs.LongPollMax.D(), Waiters: g}, nil
}
