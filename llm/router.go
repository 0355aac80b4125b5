package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// errRouteDeadline is the cancellation cause when a request's routing
// deadline (routing.deadline) passes.
var errRouteDeadline = errors.New("routing deadline passed")

// Router maps client-facing models to their deployments, retries, falls
// back between them and cools down failing ones. It is safe for concurrent use.
//
// A request tries its deployments in priority order (weighted random order
// within a priority). A retryable failure (429, 5xx, timeout, connection
// error, rejected provider credentials) moves on to the next deployment at
// once; when every deployment failed in a round, the Router waits an
// exponential backoff with full jitter (at least until a Retry-After the
// providers sent has passed) and starts another round, until
// routing.max_attempts calls were made or the routing deadline would pass.
// A client error returns at once. A deployment whose circuit is open is
// skipped (see config.Cooldown).
type Router struct {
	providers map[string]Provider
	logger    *slog.Logger
	routing   config.Routing
	metrics   *metrics

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	rand  func() float64

	reg prometheus.Registerer
	// failureSeq orders failures across deployments, so "the last real
	// upstream error" is well defined even within one clock tick.
	failureSeq atomic.Uint64

	mu       sync.Mutex
	breakers map[string]*breaker
}

// Option configures NewRouter.
type Option func(*Router)

// WithRegisterer registers the Router's metrics on reg (default: none).
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(r *Router) { r.reg = reg }
}

// WithClock replaces time.Now for backoff, cooldown, Retry-After dates and
// time to first token (for deterministic tests).
func WithClock(now func() time.Time) Option { return func(r *Router) { r.now = now } }

// WithSleep replaces the backoff wait, which must return early with ctx's
// error when ctx ends (for deterministic tests).
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(r *Router) { r.sleep = sleep }
}

// WithRand replaces the random source for jitter and weighted choice: a
// function returning values in [0, 1), safe for concurrent use.
func WithRand(rand func() float64) Option { return func(r *Router) { r.rand = rand } }

// NewRouter builds one Provider per configured provider. client nil = a
// client with sane transport timeouts (NewHTTPClient); getenv resolves each
// provider's api_key_env (nil = no keys); logger nil = discard. The routing
// policy is cfg.Routing, with defaults for unset fields.
func NewRouter(cfg *config.Config, client *http.Client, getenv func(string) string, logger *slog.Logger, opts ...Option) (*Router, error) {
	if cfg == nil {
		return nil, errors.New("llm: new router: nil config")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if client == nil {
		client = NewHTTPClient()
	}
	r := &Router{
		providers: make(map[string]Provider, len(cfg.Providers)),
		logger:    logger,
		routing:   cfg.Routing.WithDefaults(),
		now:       time.Now,
		sleep:     sleepCtx,
		rand:      rand.Float64,
		breakers:  map[string]*breaker{},
	}
	for _, o := range opts {
		o(r)
	}
	m, err := newMetrics(r.reg)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	for _, p := range cfg.Providers {
		key := func() string {
			var key string
			if p.APIKeyEnv != "" && getenv != nil {
				key = getenv(p.APIKeyEnv)
			}
			if p.APIKeyEnv != "" && key == "" {
				// Not fatal: the server should still start and serve its other
				// providers; requests here fail as rejected credentials (502).
				logger.Warn("llm provider API key is not set", "provider", p.Name, "env", p.APIKeyEnv)
			}
			return key
		}
		switch p.Kind {
		case config.KindEcho:
			e := NewEcho(p.Name)
			e.now = r.now
			r.providers[p.Name] = e
		case config.KindOpenAI:
			o := NewOpenAI(p, key(), client)
			o.now = r.now
			r.providers[p.Name] = o
		case config.KindAnthropic:
			a := NewAnthropic(p, key(), client)
			a.now = r.now
			r.providers[p.Name] = a
		default:
			return nil, fmt.Errorf("llm: provider %q: unknown kind %q", p.Name, p.Kind)
		}
	}
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Complete runs a chat completion for the client-facing model. It rewrites
// "model" in body to each deployment's upstream model (every other field is
// passed through untouched, except "stream" and "stream_options", which are
// removed because Complete returns one complete object) and routes it as
// the Router's doc says. On failure the error is the one the client should
// see (an *Error, or ctx's error when the caller went away) and AttemptsOf
// returns every failed attempt.
func (r *Router) Complete(ctx context.Context, model config.Model, body json.RawMessage) (*Response, error) {
	req, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	delete(req, "stream")
	delete(req, "stream_options")
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(r.routing.Deadline.D(), func() { cancel(errRouteDeadline) })
	defer timer.Stop()

	var resp *Response
	attempts, d, err := r.route(ctx, rctx, model, req, func(ctx context.Context, p Provider, d config.Deployment, body json.RawMessage) error {
		res, err := p.ChatCompletion(ctx, d.Model, body)
		if err == nil {
			resp = res
		}
		return err
	})
	if err != nil {
		r.metrics.requests.WithLabelValues(model.Name, d.Provider, d.Model, outcome(ctx, err)).Inc()
		return nil, &routeError{err: err, attempts: attempts}
	}
	r.metrics.requests.WithLabelValues(model.Name, d.Provider, d.Model, "success").Inc()
	if resp.Provider == "" {
		resp.Provider = d.Provider
	}
	if resp.UpstreamModel == "" {
		resp.UpstreamModel = d.Model
	}
	resp.Attempts = attempts
	return resp, nil
}

// Stream runs a streamed chat completion for the client-facing model,
// routed like Complete until the first chunk arrived: an attempt that fails
// before its first chunk falls back; after it, a failure is returned by
// Next and the stream is over. The client's stream_options are passed on;
// see openaiwire.WantsUsage for the final usage chunk. ctx bounds the whole
// stream: cancelling it (a client that went away) cancels the upstream
// call, and Usage still tells what was generated until then.
func (r *Router) Stream(ctx context.Context, model config.Model, body json.RawMessage) (Stream, error) {
	req, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	req["stream"] = json.RawMessage("true")
	start := r.now()
	rctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(r.routing.Deadline.D(), func() { cancel(errRouteDeadline) })

	var inner Stream
	var first json.RawMessage
	attempts, d, err := r.route(ctx, rctx, model, req, func(ctx context.Context, p Provider, d config.Deployment, body json.RawMessage) error {
		s, err := p.ChatCompletionStream(ctx, d.Model, body)
		if err != nil {
			return err
		}
		c, err := s.Next()
		if err != nil {
			_ = s.Close()
			if errors.Is(err, io.EOF) {
				return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: d.Provider, Retryable: true, Class: ClassServerError,
					UpstreamStatus: http.StatusOK, Message: fmt.Sprintf("provider %q returned an empty stream", d.Provider)}
			}
			return err
		}
		inner, first = s, c
		return nil
	})
	// The deadline bounds establishing the stream, not its length: the
	// provider's idle timeout guards a stream that stops flowing.
	timer.Stop()
	if err != nil {
		cancel(nil)
		r.metrics.requests.WithLabelValues(model.Name, d.Provider, d.Model, outcome(ctx, err)).Inc()
		return nil, &routeError{err: err, attempts: attempts}
	}
	return &routedStream{Stream: inner, r: r, ctx: ctx, cancel: cancel, model: model.Name, dep: d, start: start,
		first: first, attempts: attempts, br: r.breaker(d)}, nil
}

// outcome names a failed request's outcome for the requests metric.
func outcome(ctx context.Context, err error) string {
	var le *Error
	switch {
	case ctx.Err() != nil:
		return "canceled"
	case errors.As(err, &le) && le.Class == ClassClientError:
		return "client_error"
	case errors.As(err, &le) && le.Class == ClassCoolingDown:
		return "cooling_down"
	case errors.As(err, &le) && le.Code == "deadline_exceeded":
		return "deadline"
	default:
		return "error"
	}
}

func parseRequest(body json.RawMessage) (map[string]json.RawMessage, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil || req == nil {
		return nil, invalidRequest("", "request body must be a JSON object")
	}
	return req, nil
}
