package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/config"
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
// see ClientWantsUsage for the final usage chunk. ctx bounds the whole
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
				return &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Provider: d.Provider, Retryable: true, Class: ClassServerError,
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

// candidate is a deployment of the model being routed.
type candidate struct {
	dep  config.Deployment
	prov Provider
}

// order returns the model's deployments in the order to try them: by
// priority, and by weighted random choice within a priority.
func (r *Router) order(model config.Model) ([]candidate, error) {
	type item struct {
		candidate
		prio, weight int
	}
	items := make([]item, 0, len(model.Deployments))
	for i, d := range model.Deployments {
		p, ok := r.providers[d.Provider]
		if !ok {
			// Validate prevents this; a config edited after NewRouter could not.
			return nil, fmt.Errorf("llm: model %q deployment %d: unknown provider %q", model.Name, i, d.Provider)
		}
		prio := i
		if d.Priority != nil {
			prio = *d.Priority
		}
		items = append(items, item{candidate: candidate{dep: d, prov: p}, prio: prio, weight: max(d.Weight, 1)})
	}
	sort.SliceStable(items, func(a, b int) bool { return items[a].prio < items[b].prio })
	out := make([]candidate, 0, len(items))
	for lo := 0; lo < len(items); {
		hi := lo
		for hi < len(items) && items[hi].prio == items[lo].prio {
			hi++
		}
		group := items[lo:hi]
		for len(group) > 0 {
			total := 0
			for _, it := range group {
				total += it.weight
			}
			if len(group) == 1 {
				out = append(out, group[0].candidate)
				break
			}
			pick, x := len(group)-1, r.rand()*float64(total)
			for k, it := range group {
				if x < float64(it.weight) {
					pick = k
					break
				}
				x -= float64(it.weight)
			}
			out = append(out, group[pick].candidate)
			group = append(group[:pick:pick], group[pick+1:]...)
		}
		lo = hi
	}
	return out, nil
}

// breaker returns the circuit of a deployment, shared by every model that
// uses it.
func (r *Router) breaker(d config.Deployment) *breaker {
	key := d.Provider + "\x00" + d.Model
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.breakers[key]
	if !ok {
		g := r.metrics.state.WithLabelValues(d.Provider, d.Model)
		g.Set(circuitClosed)
		b = &breaker{threshold: r.routing.Cooldown.Failures, cooldown: r.routing.Cooldown.Duration.D(),
			onState: func(s int) { g.Set(float64(s)) }}
		r.breakers[key] = b
	}
	return b
}

// backoff is the full-jitter exponential backoff before retry round n (1, 2...).
func (r *Router) backoff(round int) time.Duration {
	ceil := r.routing.MaxBackoff.D()
	if b := r.routing.BaseBackoff.D(); round < 32 && b<<(round-1) > 0 && b<<(round-1) < ceil {
		ceil = b << (round - 1)
	}
	return time.Duration(r.rand() * float64(ceil))
}

// attemptFunc makes one attempt on a deployment.
type attemptFunc func(ctx context.Context, p Provider, d config.Deployment, body json.RawMessage) error

// route runs attempts until one succeeds, one fails for good, or the
// policy gives up. ctx is the caller's, rctx the one bounded by the
// routing deadline. It returns the failed attempts, the deployment that
// answered (or failed last) and the error for the client.
func (r *Router) route(ctx, rctx context.Context, model config.Model, req map[string]json.RawMessage, call attemptFunc) ([]*Error, config.Deployment, error) {
	if len(model.Deployments) == 0 {
		return nil, config.Deployment{}, fmt.Errorf("llm: model %q has no deployments", model.Name)
	}
	cands, err := r.order(model)
	if err != nil {
		return nil, config.Deployment{}, err
	}
	var (
		attempts   []*Error
		lastReal   *Error
		last       config.Deployment
		failedPrev *config.Deployment
		calls      int
		notBefore  = make([]time.Time, len(cands))
		coolLogged = make([]bool, len(cands))
		deadlineAt = r.now().Add(r.routing.Deadline.D())
	)
	last = cands[0].dep
	for round := 1; ; round++ {
		for i, c := range cands {
			if calls >= r.routing.MaxAttempts {
				break
			}
			if r.now().Before(notBefore[i]) {
				continue // the provider asked for a pause (Retry-After)
			}
			br := r.breaker(c.dep)
			ok, probe := br.admit(r.now())
			if !ok {
				if !coolLogged[i] {
					coolLogged[i] = true
					attempts = append(attempts, coolingAttempt(c.dep, br))
					r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, ClassCoolingDown).Inc()
				}
				continue
			}
			body, err := upstreamBody(req, model, c)
			if err != nil {
				br.release(probe)
				return attempts, c.dep, fmt.Errorf("llm: model %q: %w", model.Name, err)
			}
			if failedPrev != nil {
				r.metrics.fallbacks.WithLabelValues(model.Name, failedPrev.Provider, failedPrev.Model).Inc()
			}
			calls++
			last = c.dep
			t0 := r.now()
			err = call(rctx, c.prov, c.dep, body)
			latency := r.now().Sub(t0)
			r.metrics.latency.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model).Observe(latency.Seconds())
			if err == nil {
				br.success()
				r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, "success").Inc()
				return attempts, c.dep, nil
			}
			var le *Error
			switch {
			case ctx.Err() != nil:
				// The caller went away: not the deployment's fault.
				br.release(probe)
				return attempts, c.dep, err
			case errors.Is(context.Cause(rctx), errRouteDeadline):
				br.release(probe)
				le = &Error{Status: http.StatusGatewayTimeout, Type: TypeTimeout, Code: "deadline_exceeded", Provider: c.dep.Provider,
					Class: ClassTimeout, Message: fmt.Sprintf("model %q did not answer within %s", model.Name, r.routing.Deadline.D())}
				annotate(le, c.dep, latency)
				attempts = append(attempts, le)
				r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, ClassTimeout).Inc()
				return attempts, c.dep, le
			case !errors.As(err, &le):
				br.release(probe)
				return attempts, c.dep, err
			}
			annotate(le, c.dep, latency)
			attempts = append(attempts, le)
			r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, le.Class).Inc()
			if !le.Retryable {
				br.success() // the deployment answered; the request was at fault
				return attempts, c.dep, le
			}
			br.failure(le, r.now(), r.failureSeq.Add(1))
			lastReal = le
			failedPrev = &cands[i].dep
			if le.RetryAfter > 0 {
				notBefore[i] = r.now().Add(le.RetryAfter)
			}
			r.logger.WarnContext(ctx, "llm attempt failed",
				"model", model.Name, "provider", c.dep.Provider, "upstream_model", c.dep.Model, "class", le.Class,
				"status", le.Status, "upstream_status", le.UpstreamStatus, "retry_after", le.RetryAfter, "error", le.Message)
		}
		if calls >= r.routing.MaxAttempts {
			break
		}
		// Wait before the next round: the backoff, or longer when every
		// deployment that may be called asked for a pause (Retry-After).
		now := r.now()
		readyNow, pending := false, false
		var earliest time.Time
		for i, c := range cands {
			if !r.breaker(c.dep).peek(now) {
				continue
			}
			if now.Before(notBefore[i]) {
				if !pending || notBefore[i].Before(earliest) {
					pending, earliest = true, notBefore[i]
				}
				continue
			}
			readyNow = true
		}
		if !readyNow && !pending {
			// Every deployment is cooling down (or being probed by another
			// request): waiting out a cooldown is not what a caller wants.
			break
		}
		wait := r.backoff(round)
		if !readyNow && earliest.Sub(now) > wait {
			wait = earliest.Sub(now)
		}
		if now.Add(wait).After(deadlineAt) {
			break
		}
		if err := r.sleep(rctx, wait); err != nil {
			if ctx.Err() != nil {
				return attempts, last, ctx.Err()
			}
			break
		}
	}
	if lastReal != nil {
		return attempts, last, lastReal
	}
	return attempts, last, r.allCoolingError(model, cands)
}

// annotate completes a provider's error into an attempt record.
func annotate(le *Error, d config.Deployment, latency time.Duration) {
	if le.Provider == "" {
		le.Provider = d.Provider
	}
	le.UpstreamModel = d.Model
	le.LatencyMS = latency.Milliseconds()
	if le.Class == "" {
		switch {
		case le.UpstreamStatus == http.StatusTooManyRequests:
			le.Class = ClassRateLimited
		case le.Type == TypeTimeout:
			le.Class = ClassTimeout
		case le.Retryable && le.UpstreamStatus == 0:
			le.Class = ClassConnection
		case le.Retryable:
			le.Class = ClassServerError
		default:
			le.Class = ClassClientError
		}
	}
}

// coolingAttempt records a deployment skipped because its circuit is open.
func coolingAttempt(d config.Deployment, br *breaker) *Error {
	last, until, failures := br.snapshot()
	msg := fmt.Sprintf("deployment %s/%s is cooling down until %s after %d consecutive failures",
		d.Provider, d.Model, until.UTC().Format(time.RFC3339), failures)
	if last != nil {
		msg += "; last error: " + last.Message
	}
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUpstream, Provider: d.Provider, UpstreamModel: d.Model,
		Class: ClassCoolingDown, Retryable: true, Message: msg}
}

// allCoolingError is the client's error when no deployment could be
// tried: the most recent real upstream failure among them, so the client
// (and the operator) sees what is actually wrong.
func (r *Router) allCoolingError(model config.Model, cands []candidate) *Error {
	var last *Error
	var lastSeq uint64
	for _, c := range cands {
		le, seq := r.breaker(c.dep).lastFailure()
		if le != nil && seq > lastSeq {
			last, lastSeq = le, seq
		}
	}
	if last == nil {
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUpstream, Class: ClassCoolingDown, Retryable: true,
			Message: fmt.Sprintf("every deployment of model %q is cooling down; try again later", model.Name)}
	}
	e := *last
	e.Class, e.Retryable, e.LatencyMS = ClassCoolingDown, true, 0
	e.Message = fmt.Sprintf("every deployment of model %q is cooling down after repeated failures; the last one failed with: %s", model.Name, last.Message)
	return &e
}

// maxTokensRequirer is a provider that needs max_tokens in every request.
type maxTokensRequirer interface{ requiresMaxTokens() bool }

// upstreamBody is the request for one deployment: "model" set to its
// upstream model and, for providers that require max_tokens, the model's
// max_output_tokens when the client set no limit.
func upstreamBody(req map[string]json.RawMessage, model config.Model, c candidate) (json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(req)+1)
	for k, v := range req {
		out[k] = v
	}
	m, err := json.Marshal(c.dep.Model)
	if err != nil {
		return nil, fmt.Errorf("encode model name: %w", err)
	}
	out["model"] = m
	clampOutputLimits(out, model.MaxOutputTokens)
	if mr, ok := c.prov.(maxTokensRequirer); ok && mr.requiresMaxTokens() && model.MaxOutputTokens > 0 {
		_, a := out["max_tokens"]
		_, b := out["max_completion_tokens"]
		if !a && !b {
			out["max_tokens"], _ = json.Marshal(model.MaxOutputTokens)
		}
	}
	return encodeJSON(out)
}

// clampOutputLimits keeps the provider within what admission reserved
// for (quota.WorstCase): max_completion_tokens, else max_tokens, capped by
// the model's max_output_tokens. A client's limit above that cap — or,
// with both fields set, the one the reservation did not count — is
// lowered to it, so whichever field a provider honours, a completion
// cannot cost more than its reservation.
func clampOutputLimits(req map[string]json.RawMessage, modelCap int64) {
	limit := func(field string) int64 {
		var n int64
		if raw, ok := req[field]; !ok || json.Unmarshal(raw, &n) != nil {
			return 0
		}
		return n
	}
	reserved := limit("max_completion_tokens")
	if reserved <= 0 {
		reserved = limit("max_tokens")
	}
	if modelCap > 0 && (reserved <= 0 || reserved > modelCap) {
		reserved = modelCap
	}
	if reserved <= 0 {
		return
	}
	for _, field := range []string{"max_completion_tokens", "max_tokens"} {
		if limit(field) > reserved {
			req[field], _ = json.Marshal(reserved)
		}
	}
}

// encodeJSON marshals v without HTML escaping, so the client's text reaches
// the provider as written.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// firstTokenAter is implemented by the providers' streams.
type firstTokenAter interface{ firstTokenAt() time.Time }

// routedStream is the Stream Router.Stream returns: the established
// provider stream plus the attempts before it, metrics and the breaker.
type routedStream struct {
	Stream
	r        *Router
	ctx      context.Context
	cancel   context.CancelCauseFunc
	model    string
	dep      config.Deployment
	start    time.Time
	first    json.RawMessage
	attempts []*Error
	br       *breaker
	ended    bool
	ttftSeen bool
}

// Next implements Stream.
func (s *routedStream) Next() (json.RawMessage, error) {
	if s.first != nil {
		c := s.first
		s.first = nil
		s.observeTTFT()
		return c, nil
	}
	if s.ended {
		return s.Stream.Next()
	}
	c, err := s.Stream.Next()
	s.observeTTFT()
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, io.EOF):
		s.end("success")
	case s.ctx.Err() != nil:
		s.end("canceled")
	default:
		var le *Error
		if errors.As(err, &le) {
			annotate(le, s.dep, s.r.now().Sub(s.start))
			s.br.failure(le, s.r.now(), s.r.failureSeq.Add(1))
			s.r.metrics.attempts.WithLabelValues(s.model, s.dep.Provider, s.dep.Model, le.Class).Inc()
		}
		s.end("error")
	}
	return nil, err
}

func (s *routedStream) observeTTFT() {
	if s.ttftSeen {
		return
	}
	if d := s.TimeToFirstToken(); d > 0 {
		s.ttftSeen = true
		s.r.metrics.ttft.WithLabelValues(s.model, s.dep.Provider, s.dep.Model).Observe(d.Seconds())
	}
}

func (s *routedStream) end(outcome string) {
	if s.ended {
		return
	}
	s.ended = true
	s.r.metrics.requests.WithLabelValues(s.model, s.dep.Provider, s.dep.Model, outcome).Inc()
}

// TimeToFirstToken implements Stream, measured from the start of Router.Stream.
func (s *routedStream) TimeToFirstToken() time.Duration {
	f, ok := s.Stream.(firstTokenAter)
	if !ok {
		return s.Stream.TimeToFirstToken()
	}
	at := f.firstTokenAt()
	if at.IsZero() {
		return 0
	}
	return max(at.Sub(s.start), time.Nanosecond)
}

// Attempts implements Stream.
func (s *routedStream) Attempts() []*Error { return s.attempts }

// Close implements Stream: it cancels the upstream call.
func (s *routedStream) Close() error {
	s.end("canceled")
	s.first = nil
	s.cancel(context.Canceled)
	return s.Stream.Close()
}
