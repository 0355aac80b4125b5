package execution

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// ExpiredFunc lists completions whose claim's lease ended at or before
// now, at most limit (jobs.ExpiredLeases on the live jobs model).
type ExpiredFunc func(ctx context.Context, now time.Time, limit int) ([]string, error)

// ReaperConfig configures a Reaper.
type ReaperConfig struct {
	Service *commands.Service
	// Expired finds candidates; each one's stream has the final say.
	Expired ExpiredFunc
	// Instance names this process in the events' actor ("reaper:<instance>").
	Instance string
	// Interval is the time between passes; default 30s.
	Interval time.Duration
	// Batch bounds the completions one pass looks at; default 100.
	Batch int
	// Now is the clock; default time.Now.
	Now      func() time.Time
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Released, when set, is called for each completion this reaper
	// abandoned, so the limiter frees what it had reserved at once instead
	// of when the reservation expires. A requeued completion keeps its
	// reservation: the retry settles it.
	Released func(ctx context.Context, c completion.Completion)
	// Retry sends queued (async) jobs whose claim expired back to the
	// queue, up to MaxRetries times (jobs.on_expired_lease: retry);
	// otherwise, and for synchronous requests, the reaper abandons.
	Retry      bool
	MaxRetries int
	// Lease is the lease a retry's claim gets (jobs.lease): a job is only
	// requeued while its budget reservation outlives one more lease.
	Lease time.Duration
}

func (c *ReaperConfig) setDefaults() {
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Batch == 0 {
		c.Batch = 100
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a missing dependency or a bad setting.
func (c *ReaperConfig) Validate() error {
	switch {
	case c.Service == nil || c.Expired == nil:
		return errors.New("reaper: Service and Expired are required")
	case c.Instance == "":
		return errors.New("reaper: Instance is required")
	case c.Interval < 10*time.Millisecond:
		return errors.New("reaper: Interval must be at least 10ms")
	case c.Batch < 1:
		return errors.New("reaper: Batch must be positive")
	case c.Retry && (c.MaxRetries < 1 || c.Lease <= 0):
		return errors.New("reaper: Retry needs a positive MaxRetries and Lease")
	}
	return nil
}

// Reaper ends the claims of executors that died: a running completion
// whose claim's lease expired gets completion.abandoned, which releases
// what it reserved and bills nothing, or, with Retry, a queued job with
// retries left gets completion.requeued and runs again on another worker,
// on the same reservation. The executor, if it was only slow, then finds
// its outcome refused (its append conflicts), so a request is never both
// ended and billed by it. Any number of reapers may run: the event's id
// derives from the stream (and the retry number), so a claim is ended once.
type Reaper struct {
	cfg       ReaperConfig
	abandoned *prometheus.CounterVec
	requeued  *prometheus.CounterVec
	passes    *prometheus.CounterVec
}

// NewReaper returns a Reaper.
func NewReaper(cfg ReaperConfig) (*Reaper, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Reaper{
		cfg: cfg,
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_reaper_abandoned_total",
			Help: "Completions this process's reaper ended with completion.abandoned because their claim's lease expired, by model.",
		}, []string{"model"}),
		requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_reaper_requeued_total",
			Help: "Queued jobs this process's reaper sent back to the queue with completion.requeued because their claim's lease expired, by model.",
		}, []string{"model"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_reaper_passes_total",
			Help: "Reaper passes by outcome (ok, error).",
		}, []string{"outcome"}),
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{r.abandoned, r.requeued, r.passes} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("reaper: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Run reaps every Interval until ctx ends. A failed pass is logged and
// retried at the next tick.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Error("reaper pass", "error", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// RunOnce makes one pass and returns the ids of the completions whose
// claim this call ended, abandoned or requeued (not those another reaper
// was first to).
func (r *Reaper) RunOnce(ctx context.Context) ([]string, error) {
	now := r.cfg.Now()
	ids, err := r.cfg.Expired(ctx, now, r.cfg.Batch)
	if err != nil {
		r.passes.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("reaper: %w", err)
	}
	var done []string
	var errs []error
	for _, id := range ids {
		// Each attempt has its own correlation id: it is how the Service
		// tells this reaper's event from another's.
		md := events.Metadata{CorrelationID: "reap_" + uuid.NewString(), Actor: "reaper:" + r.cfg.Instance}
		var c completion.Completion
		var mine bool
		if r.cfg.Retry {
			c, mine, err = r.cfg.Service.ReapExpired(ctx, md, id, completion.RequeueCompletion{
				Now: now, MaxRetries: r.cfg.MaxRetries, Lease: r.cfg.Lease, Reason: "lease_expired"})
		} else {
			c, mine, err = r.cfg.Service.AbandonExpired(ctx, md, id, completion.AbandonCompletion{Now: now, Reason: "lease_expired"})
		}
		switch {
		case errors.Is(err, domainerr.ErrWrongState), errors.Is(err, domainerr.ErrNotFound), errors.Is(err, events.ErrConflict):
			// Finished meanwhile, still leased (the read model lags), or
			// another writer was first: nothing to do.
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("reap %s: %w", id, err))
			continue
		}
		if mine && c.Status == completion.StatusQueued {
			done = append(done, id)
			r.requeued.WithLabelValues(c.Model).Inc()
			r.cfg.Logger.Warn("completion requeued: its claim expired", "completion_id", id, "retry", c.Retries,
				"model", c.Model)
			continue
		}
		if mine {
			done = append(done, id)
			if r.cfg.Released != nil {
				r.cfg.Released(ctx, c)
			}
			r.abandoned.WithLabelValues(c.Model).Inc()
			r.cfg.Logger.Warn("completion abandoned: its claim expired", "completion_id", id, "executor", c.Executor,
				"lease_expires_at", c.LeaseExpiresAt, "model", c.Model)
		}
	}
	if len(errs) > 0 {
		r.passes.WithLabelValues("error").Inc()
		return done, fmt.Errorf("reaper: %w", errors.Join(errs...))
	}
	r.passes.WithLabelValues("ok").Inc()
	return done, nil
}
