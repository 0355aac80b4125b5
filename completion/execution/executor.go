// Package execution runs claimed completion requests: it calls the model's
// providers, prices the usage and records the outcome. The inline path (an
// API instance holding the client's connection) and the queued path (a
// worker consuming the bus) both run this code, so both write the same
// events.
package execution

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// Completer calls a model's providers.
type Completer interface {
	Complete(ctx context.Context, model config.Model, body json.RawMessage) (*llm.Response, error)
}

// Config configures an Executor.
type Config struct {
	Service *commands.Service
	LLM     Completer
	// Streams starts streamed completions; nil disables streaming.
	Streams  Streamer
	Models   func(name string) (config.Model, bool)
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Lease is how long a claim is valid before a reaper may end it.
	// Default 10 minutes.
	Lease time.Duration
	// ReservationMargin is how long a budget reservation outlives its
	// claim's lease (quota.reservation_ttl − jobs.lease): each renewal
	// moves the reservation's end with the lease (0: it stays put).
	ReservationMargin time.Duration
	Now               func() time.Time
	// Settled, when set, is called once an outcome is recorded, to settle
	// the completion's budget reservation (quota); nil: nothing to settle.
	Settled func(ctx context.Context, c completion.Completion)
	// Renewed, when set, is called after each renewal of a claim's lease
	// (from the renewing goroutine; keep it short), e.g. so the quota
	// limiter holds a long run's reservation as long as its lease.
	Renewed func(ctx context.Context, c completion.Completion)
	// Transient reports whether an error of the event store says it could
	// not be reached or did not answer (a write's effect unknown), so the
	// outcome's append is resolved and retried rather than given up (see
	// resolve). Default: Transient, which knows no driver; the server
	// passes its store's own (pgstore.Transient).
	Transient func(error) bool
	// Ambiguous reports whether a failed append may still have been
	// applied (sent, no answer). Default: Transient; the server passes
	// pgstore.Ambiguous, so that a synchronous run whose append was
	// refused before it was sent ends at once with ErrNotStored.
	Ambiguous func(error) bool
	// ClaimInlineAfter is how long a synchronous run goes on before its
	// request and claim are stored on their own (see inline.go). Default
	// 30s, or a tenth of a lease shorter than 5m; it must be under a third
	// of the lease (when the first renewal is due).
	ClaimInlineAfter time.Duration
}

func (c *Config) setDefaults() {
	if c.Lease == 0 {
		c.Lease = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Transient == nil {
		c.Transient = Transient
	}
	if c.Ambiguous == nil {
		c.Ambiguous = c.Transient
	}
	if c.ClaimInlineAfter == 0 {
		c.ClaimInlineAfter = min(30*time.Second, c.Lease/10)
	}
}

// Validate reports a missing dependency.
func (c *Config) Validate() error {
	switch {
	case c.Service == nil:
		return errors.New("execution: Service is required")
	case c.LLM == nil:
		return errors.New("execution: LLM is required")
	case c.Models == nil:
		return errors.New("execution: Models is required")
	case c.Lease < time.Second:
		return errors.New("execution: Lease must be at least 1s")
	case c.ClaimInlineAfter < 0 || c.ClaimInlineAfter >= c.Lease/renewAfter:
		return fmt.Errorf("execution: ClaimInlineAfter must be between 0 and a third of the lease (%s)", c.Lease/renewAfter)
	}
	return nil
}

// Executor runs claimed completions.
type Executor struct {
	cfg      Config
	outcomes *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	renewals *prometheus.CounterVec
	resolved *prometheus.CounterVec
}

// New returns an Executor.
func New(cfg Config) (*Executor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	x := &Executor{
		cfg: cfg,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_completions_total",
			Help: "Completions executed, by model, mode and outcome.",
		}, []string{"model", "mode", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_provider_seconds",
			Help:    "Time spent waiting for providers, by model and provider.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"model", "provider"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_tokens_total",
			Help: "Tokens used, by model, provider and kind (prompt, completion).",
		}, []string{"model", "provider", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_cost_nano_usd_total",
			Help: "Cost of completions in nano-USD, by model and provider.",
		}, []string{"model", "provider"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_lease_renewals_total",
			Help: "Claim leases renewed (completion.lease_renewed) by this process's executions still at work, by model and mode.",
		}, []string{"model", "mode"}),
		resolved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_outcome_resolutions_total",
			Help: "Outcome appends that failed without an answer (the store hung or went away) or conflicted, by mode and what the stream then showed: landed (it had been applied), appended (a retry recorded it), lost (a reaper ended the run), unresolved; claims likewise: claim_landed, claim_unresolved.",
		}, []string{"mode", "result"}),
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{x.outcomes, x.latency, x.tokens, x.cost, x.renewals, x.resolved} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("execution: register metrics: %w", err)
			}
		}
	}
	return x, nil
}

// Claim claims a queued completion for executor. It returns
// domainerr.ErrAlreadyClaimed when someone else was first: the caller drops
// its copy of the work.
//
// A claim whose append failed without an answer (the store hung or went
// away) is resolved like an outcome (see resolveClaim): had it landed
// unseen, nobody would run the job, and the reaper would end it.
func (x *Executor) Claim(ctx context.Context, md events.Metadata, completionID, executor string) (completion.Completion, error) {
	md.Actor = executor
	cmd := completion.StartCompletion{Executor: executor, Now: x.cfg.Now(), Lease: x.cfg.Lease}
	c, err := x.cfg.Service.StartCompletion(ctx, md, completionID, cmd)
	if err != nil && !errors.Is(err, domainerr.ErrAlreadyClaimed) && x.cfg.Transient(err) {
		return x.resolveClaim(ctx, md, completionID, cmd, err)
	}
	return c, err
}

// StartCommand is the claim an inline executor appends with the request.
func (x *Executor) StartCommand(executor string) *completion.StartCompletion {
	return &completion.StartCompletion{Executor: executor, Now: x.cfg.Now(), Lease: x.cfg.Lease}
}

// Run executes a completion that c.Executor has claimed and records its
// outcome. No database connection is held while the provider works: the
// claim was a short transaction and the outcome is another.
//
// The outcome is recorded even when ctx ends (a client that went away
// still used what the provider produced), so the append runs without ctx's
// cancellation.
func (x *Executor) Run(ctx context.Context, md events.Metadata, c completion.Completion) (completion.Completion, error) {
	return x.run(ctx, md, c, nil)
}

// run is Run, and RunInline with p set.
//
// Its goroutine waits in call for as long as the provider works, with run
// and call on its stack: both keep their frames small (the renewals start
// and stop, and the outcome is recorded, in functions of their own), as a
// goroutine's stack is the deepest its calls went, rounded up to a power
// of two, and thousands of slow calls wait at once.
func (x *Executor) run(ctx context.Context, md events.Metadata, c completion.Completion, p *Inline) (done completion.Completion, err error) {
	if c.Status != completion.StatusRunning {
		return c, wrongState(c.ID)
	}
	md.Actor = c.Executor
	o := x.call(ctx, &md, &c, p)
	if o.lost != nil {
		return c, x.lost(&c, o.lost)
	}
	err = x.conclude(ctx, &md, &c, &o, p, &done)
	return done, err
}

// wrongState is the error of a run of a completion not running.
//
//go:noinline
func wrongState(id string) error { return fmt.Errorf("run %s: %w", id, domainerr.ErrWrongState) }

// lost counts a run whose claim was lost, and returns its error.
//
//go:noinline
func (x *Executor) lost(c *completion.Completion, err error) error {
	x.outcomes.WithLabelValues(c.Model, c.Mode, "unrecorded").Inc()
	return claimLost(c.ID, err)
}

// called is what a run's provider call ended with.
type called struct {
	model config.Model
	resp  *llm.Response
	err   error
	// lost is why the claim was lost meanwhile (nil: it was not).
	lost    error
	elapsed time.Duration
}

// call calls c's providers, its claim renewed while they work (the
// router's deadline bounds the call); c becomes the claim as last renewed.
func (x *Executor) call(ctx context.Context, md *events.Metadata, c *completion.Completion, p *Inline) called {
	start := x.cfg.Now()
	model, ok := x.cfg.Models(c.Model)
	o := called{model: model}
	if !ok {
		o.err = llm.ModelRemoved(c.Model)
	} else {
		k, kctx := x.keepFor(ctx, md, c, p)
		o.resp, o.err = x.cfg.LLM.Complete(kctx, model, c.Request)
		o.lost = k.stopInto(c)
	}
	o.elapsed = x.cfg.Now().Sub(start)
	return o
}

// keepFor is keep, out of call's frame.
//
//go:noinline
func (x *Executor) keepFor(ctx context.Context, md *events.Metadata, c *completion.Completion, p *Inline) (*keeper, context.Context) {
	return x.keep(ctx, *md, *c, p)
}

// stopInto is stop, out of call's frame: c becomes the claim as last
// renewed, and the error that lost it is returned.
//
//go:noinline
func (k *keeper) stopInto(c *completion.Completion) error {
	var lost error
	*c, lost = k.stop()
	return lost
}

// conclude records the outcome of c's call o, which becomes *done.
func (x *Executor) conclude(ctx context.Context, md *events.Metadata, c *completion.Completion, o *called, p *Inline, done *completion.Completion) error {
	finish := completion.FinishCompletion{Executor: c.Executor}
	err := o.err
	if err == nil {
		finish.Attempts = attempts(o.resp.Attempts)
		finish.Succeeded, err = x.success(*c, o.model, o.resp, o.elapsed)
	} else {
		finish.Attempts = attempts(llm.AttemptsOf(err))
	}
	if err != nil {
		finish.Failed = failure(ctx, err, o.elapsed)
	}
	*done, err = x.record(ctx, *md, *c, finish, o.elapsed, p)
	return err
}

// attempts turns the router's failed attempts into their events.
func attempts(errs []*llm.Error) []events.CompletionAttemptFailed {
	out := make([]events.CompletionAttemptFailed, 0, len(errs))
	for _, e := range errs {
		if e == nil {
			continue
		}
		out = append(out, events.CompletionAttemptFailed{
			Provider: e.Provider, UpstreamModel: e.UpstreamModel, Status: e.UpstreamStatus,
			ErrorClass: e.Class, ErrorMessage: e.Message, LatencyMS: e.LatencyMS, Retryable: e.Retryable,
		})
	}
	return out
}

// record appends a completion's outcome and counts it. An append that
// fails without an answer (the store hung or went away) or conflicts is
// resolved (see resolve): the outcome is learned from the stream or
// appended again while the claim's lease lasts; a first append that
// succeeds costs nothing more.
func (x *Executor) record(ctx context.Context, md events.Metadata, c completion.Completion, finish completion.FinishCompletion, elapsed time.Duration, p *Inline) (completion.Completion, error) {
	ctx = context.WithoutCancel(ctx)
	done, appendErr := x.appendFirst(ctx, md, c, finish, p)
	if appendErr != nil && !errors.Is(appendErr, ErrNotStored) && (errors.Is(appendErr, events.ErrConflict) || x.cfg.Transient(appendErr)) {
		// A conflict: a renewal of this claim that committed after its
		// call gave up, or a reaper; the stream says which.
		done, appendErr = x.resolve(ctx, md, c, finish, appendErr, p)
	}
	if appendErr != nil {
		x.outcomes.WithLabelValues(c.Model, c.Mode, "unrecorded").Inc()
		switch {
		case errors.Is(appendErr, errUnresolved):
			// The store stayed away: whether the outcome landed is
			// unknown (the reaper will end the run if it did not).
		case errors.Is(appendErr, domainerr.ErrClaimLost) && x.cfg.Transient(appendErr):
			// The store stayed away until the lease ran out and a reaper
			// ended the run (nothing billed): the client's answer is the
			// outage's (503 with Retry-After), not a stalled executor's.
		case errors.Is(appendErr, domainerr.ErrClaimLost):
			return c, claimLost(c.ID, appendErr)
		case errors.Is(appendErr, events.ErrConflict) || errors.Is(appendErr, domainerr.ErrWrongState):
			// The claim holder is the stream's only writer: someone else
			// wrote, so a reaper ended the claim.
			return c, claimLost(c.ID, fmt.Errorf("%w: %w", domainerr.ErrClaimLost, appendErr))
		}
		return c, fmt.Errorf("record outcome of %s: %w", c.ID, appendErr)
	}
	x.count(ctx, md, c, done, elapsed)
	return done, nil
}

// appendFirst makes the outcome's first append: with the request and
// claim when p has not stored them. A synchronous run whose append was
// refused before it was sent has stored nothing: ErrNotStored.
func (x *Executor) appendFirst(ctx context.Context, md events.Metadata, c completion.Completion, finish completion.FinishCompletion, p *Inline) (completion.Completion, error) {
	if p == nil || p.isStored() {
		return x.cfg.Service.FinishClaimed(ctx, md, c, finish)
	}
	done, err := x.finishInline(ctx, md, p, finish)
	switch {
	case err == nil:
		p.markStored()
	case errors.Is(err, events.ErrConflict):
		// Its request and claim were stored meanwhile (Store, whose
		// answer may have been lost): an ordinary claimed run now.
		p.markStored()
	case x.cfg.Transient(err) && !x.cfg.Ambiguous(err):
		return c, fmt.Errorf("record %s: %w: %w", c.ID, ErrNotStored, err)
	}
	return done, err
}

// count settles a recorded outcome's reservation and counts it.
func (x *Executor) count(ctx context.Context, md events.Metadata, c, done completion.Completion, elapsed time.Duration) {
	if x.cfg.Settled != nil {
		x.cfg.Settled(ctx, done)
	}
	if done.Succeeded != nil {
		s := done.Succeeded
		x.outcomes.WithLabelValues(c.Model, c.Mode, "succeeded").Inc()
		x.latency.WithLabelValues(c.Model, s.Provider).Observe(elapsed.Seconds())
		x.tokens.WithLabelValues(c.Model, s.Provider, "prompt").Add(float64(s.Usage.PromptTokens))
		x.tokens.WithLabelValues(c.Model, s.Provider, "completion").Add(float64(s.Usage.CompletionTokens))
		x.cost.WithLabelValues(c.Model, s.Provider).Add(float64(s.CostNanoUSD))
	} else {
		x.outcomes.WithLabelValues(c.Model, c.Mode, "failed").Inc()
		x.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "completion failed",
			slog.String("completion_id", c.ID), slog.String("model", c.Model),
			slog.Int("status", done.Failed.Status), slog.String("error_type", done.Failed.ErrorType),
			slog.String("correlation_id", md.CorrelationID))
	}
}

func (x *Executor) success(c completion.Completion, model config.Model, resp *llm.Response, elapsed time.Duration) (*events.CompletionSucceeded, error) {
	cost, err := model.ParsedPrice().Cost(resp.Usage.PromptTokens, resp.Usage.CompletionTokens)
	if err != nil {
		return nil, llm.BadAnswer(resp.Provider, "The provider reported unusable token counts.")
	}
	body, err := clientResponse(resp.Body, c.ID, c.Model)
	if err != nil {
		return nil, llm.BadAnswer(resp.Provider, "The provider's response could not be read.")
	}
	return &events.CompletionSucceeded{
		Provider:      resp.Provider,
		UpstreamModel: resp.UpstreamModel,
		Usage: events.Usage{
			PromptTokens:     resp.Usage.PromptTokens,
			CompletionTokens: resp.Usage.CompletionTokens,
			TotalTokens:      resp.Usage.PromptTokens + resp.Usage.CompletionTokens,
			Estimated:        resp.Usage.Estimated,
		},
		CostNanoUSD: int64(cost),
		LatencyMS:   elapsed.Milliseconds(),
		Response:    body,
	}, nil
}

// clientResponse gives the provider's response Tollgate's completion id and
// the client-facing model name, keeping every other byte as it came.
func clientResponse(body json.RawMessage, id, model string) (json.RawMessage, error) {
	body = validUTF8(body)
	if !json.Valid(body) {
		return nil, errors.New("the response is not JSON")
	}
	return openaiwire.WithIDAndModel(body, id, model)
}

// failure is the completion.failed of a run that ended with err
// (classified by llm.Failure).
func failure(ctx context.Context, err error, elapsed time.Duration) *events.CompletionFailed {
	le := llm.Failure(err, ctx.Err() != nil)
	return &events.CompletionFailed{LatencyMS: elapsed.Milliseconds(),
		Status: le.Status, ErrorType: le.Type, ErrorCode: le.Code, ErrorMessage: le.Message, Provider: le.Provider}
}
