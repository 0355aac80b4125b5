package server

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/quota/admission"
)

// startCompletions builds what the API and worker roles share to run
// completions: the quota limiter and its settlement, the plan budget
// metrics, the LLM router and the executor.
func (w *wiring) startCompletions(ctx context.Context) (err error) {
	cfg, logger := w.cfg, w.logger
	if w.limiter, err = w.quotaLimiter(ctx); err != nil {
		return err
	}
	w.settle = admission.Settler(cfg, w.svc, w.limiter, logger, time.Now)
	if err := w.watchPlanBudgets(30 * time.Second); err != nil {
		return err
	}
	router, err := llm.NewRouter(cfg, w.opts.ProviderClient, w.getenv, logger, llm.WithRegisterer(w.reg))
	if err != nil {
		return err
	}
	w.exec, err = execution.New(execution.Config{Service: w.svc, LLM: router, Streams: router, Models: cfg.Model, Logger: logger, Registry: w.reg, Lease: cfg.Jobs.Lease.D(),
		Settled: w.settle, Renewed: admission.Extender(w.limiter, logger, time.Now), ReservationMargin: admission.ReservationMargin(cfg),
		Transient: pgstore.Transient, Ambiguous: pgstore.Ambiguous, ClaimInlineAfter: cfg.Jobs.InlineClaimAfter.D()})
	return err
}
