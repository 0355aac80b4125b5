package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// attemptFunc makes one attempt on a deployment.
type attemptFunc func(ctx context.Context, p Provider, d config.Deployment, body json.RawMessage) error

// routeRun is the state of one request's routing.
type routeRun struct {
	ctx, rctx  context.Context
	model      config.Model
	req        map[string]json.RawMessage
	call       attemptFunc
	cands      []candidate
	attempts   []*Error
	lastReal   *Error
	last       config.Deployment
	failedPrev *config.Deployment
	calls      int
	notBefore  []time.Time
	coolLogged []bool
}

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
	run := &routeRun{ctx: ctx, rctx: rctx, model: model, req: req, call: call, cands: cands, last: cands[0].dep,
		notBefore: make([]time.Time, len(cands)), coolLogged: make([]bool, len(cands))}
	deadlineAt := r.now().Add(r.routing.Deadline.D())
	for round := 1; ; round++ {
		for i := range cands {
			if run.calls >= r.routing.MaxAttempts {
				break
			}
			if done, err := r.try(run, i); done {
				return run.attempts, cands[i].dep, err
			}
		}
		if run.calls >= r.routing.MaxAttempts {
			break
		}
		wait, ok := r.roundWait(run, round, deadlineAt)
		if !ok {
			break
		}
		if err := r.sleep(rctx, wait); err != nil {
			if ctx.Err() != nil {
				return run.attempts, run.last, ctx.Err()
			}
			break
		}
	}
	if run.lastReal != nil {
		return run.attempts, run.last, run.lastReal
	}
	return run.attempts, run.last, r.allCoolingError(model, cands)
}

// try makes the attempt on candidate i, unless it asked for a pause or
// its circuit is open. done reports that routing is over, with err its
// result (nil: the attempt succeeded).
func (r *Router) try(run *routeRun, i int) (done bool, err error) {
	c, model := run.cands[i], run.model
	if r.now().Before(run.notBefore[i]) {
		return false, nil // the provider asked for a pause (Retry-After)
	}
	br := r.breaker(c.dep)
	ok, probe := br.admit(r.now())
	if !ok {
		if !run.coolLogged[i] {
			run.coolLogged[i] = true
			run.attempts = append(run.attempts, coolingAttempt(c.dep, br))
			r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, ClassCoolingDown).Inc()
		}
		return false, nil
	}
	body, err := upstreamBody(run.req, model, c)
	if err != nil {
		br.release(probe)
		return true, fmt.Errorf("llm: model %q: %w", model.Name, err)
	}
	if run.failedPrev != nil {
		r.metrics.fallbacks.WithLabelValues(model.Name, run.failedPrev.Provider, run.failedPrev.Model).Inc()
	}
	run.calls++
	run.last = c.dep
	t0 := r.now()
	err = run.call(run.rctx, c.prov, c.dep, body)
	latency := r.now().Sub(t0)
	r.metrics.latency.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model).Observe(latency.Seconds())
	if err == nil {
		br.success()
		r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, "success").Inc()
		return true, nil
	}
	return r.failed(run, i, br, probe, err, latency)
}

// failed records the failed attempt on candidate i and reports whether
// routing is over (with the client's error) or goes on.
func (r *Router) failed(run *routeRun, i int, br *breaker, probe bool, err error, latency time.Duration) (bool, error) {
	c, model := run.cands[i], run.model
	var le *Error
	switch {
	case run.ctx.Err() != nil:
		// The caller went away: not the deployment's fault.
		br.release(probe)
		return true, err
	case errors.Is(context.Cause(run.rctx), errRouteDeadline):
		br.release(probe)
		le = &Error{Status: http.StatusGatewayTimeout, Type: openaiwire.TypeTimeout, Code: "deadline_exceeded", Provider: c.dep.Provider,
			Class: ClassTimeout, Message: fmt.Sprintf("model %q did not answer within %s", model.Name, r.routing.Deadline.D())}
		annotate(le, c.dep, latency)
		run.attempts = append(run.attempts, le)
		r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, ClassTimeout).Inc()
		return true, le
	case !errors.As(err, &le):
		br.release(probe)
		return true, err
	}
	annotate(le, c.dep, latency)
	run.attempts = append(run.attempts, le)
	r.metrics.attempts.WithLabelValues(model.Name, c.dep.Provider, c.dep.Model, le.Class).Inc()
	if !le.Retryable {
		br.success() // the deployment answered; the request was at fault
		return true, le
	}
	br.failure(le, r.now(), r.failureSeq.Add(1))
	run.lastReal = le
	run.failedPrev = &run.cands[i].dep
	if le.RetryAfter > 0 {
		run.notBefore[i] = r.now().Add(le.RetryAfter)
	}
	r.logger.WarnContext(run.ctx, "llm attempt failed",
		"model", model.Name, "provider", c.dep.Provider, "upstream_model", c.dep.Model, "class", le.Class,
		"status", le.Status, "upstream_status", le.UpstreamStatus, "retry_after", le.RetryAfter, "error", le.Message)
	return false, nil
}

// roundWait is the wait before round+1: the backoff, or longer when every
// deployment that may be called asked for a pause (Retry-After). ok is
// false when no further round is worth it: every deployment is cooling
// down, or the wait would pass the deadline.
func (r *Router) roundWait(run *routeRun, round int, deadlineAt time.Time) (time.Duration, bool) {
	now := r.now()
	readyNow, pending := false, false
	var earliest time.Time
	for i, c := range run.cands {
		if !r.breaker(c.dep).peek(now) {
			continue
		}
		if now.Before(run.notBefore[i]) {
			if !pending || run.notBefore[i].Before(earliest) {
				pending, earliest = true, run.notBefore[i]
			}
			continue
		}
		readyNow = true
	}
	if !readyNow && !pending {
		// Every deployment is cooling down (or being probed by another
		// request): waiting out a cooldown is not what a caller wants.
		return 0, false
	}
	wait := r.backoff(round)
	if !readyNow && earliest.Sub(now) > wait {
		wait = earliest.Sub(now)
	}
	if now.Add(wait).After(deadlineAt) {
		return 0, false
	}
	return wait, true
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
		case le.Type == openaiwire.TypeTimeout:
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
	return &Error{Status: http.StatusServiceUnavailable, Type: openaiwire.TypeUpstream, Provider: d.Provider, UpstreamModel: d.Model,
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
		return &Error{Status: http.StatusServiceUnavailable, Type: openaiwire.TypeUpstream, Class: ClassCoolingDown, Retryable: true,
			Message: fmt.Sprintf("every deployment of model %q is cooling down; try again later", model.Name)}
	}
	e := *last
	e.Class, e.Retryable, e.LatencyMS = ClassCoolingDown, true, 0
	e.Message = fmt.Sprintf("every deployment of model %q is cooling down after repeated failures; the last one failed with: %s", model.Name, last.Message)
	return &e
}
