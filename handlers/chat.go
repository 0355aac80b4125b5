package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llm/openaiwire"
	"github.com/tollgate/tollgate/quota/admission"
)

// maxChoices is the largest n a request may ask for (OpenAI's bound).
const maxChoices = 128

// validateChat checks a chat request at the edge, before anything is
// stored: the body must be UTF-8 JSON without unpaired surrogate escapes
// (see input.go; \u0000 is kept, it is text), and the fields Tollgate reads
// (openaiwire.Envelope) must have their types and ranges. Each refusal
// names the parameter. The body itself travels on untouched, so fields
// Tollgate does not know (tools, response_format, …) reach the provider.
func validateChat(body []byte) (openaiwire.Envelope, *apiError) {
	var req openaiwire.Envelope
	if ae := unmarshalClient(body, &req); ae != nil {
		return req, ae
	}
	switch {
	case req.Model == "":
		return req, badRequest("missing_required_parameter", "model", "You must provide a model parameter.")
	case len(req.Messages) == 0:
		return req, badRequest("missing_required_parameter", "messages", "You must provide at least one message.")
	}
	if ae := checkText("model", req.Model); ae != nil {
		return req, ae
	}
	for i, m := range req.Messages {
		if _, ok := openaiwire.MessageRole(m); !ok {
			return req, badRequest("invalid_value", fmt.Sprintf("messages[%d]", i), "Each message must be an object with a role.")
		}
	}
	for _, f := range []struct {
		param string
		v     *int64
		max   int64
	}{{"max_tokens", req.MaxTokens, 0}, {"max_completion_tokens", req.MaxCompletionTokens, 0}, {"n", req.N, maxChoices}} {
		switch {
		case f.v == nil:
		case *f.v < 1:
			return req, badRequest("invalid_value", f.param, "%s must be at least 1, got %d.", f.param, *f.v)
		case f.max > 0 && *f.v > f.max:
			return req, badRequest("invalid_value", f.param, "%s must be at most %d, got %d.", f.param, f.max, *f.v)
		}
	}
	return req, nil
}

// modelFor returns the configured model if the caller's plan allows it.
func (a *API) modelFor(p principal, name string) (config.Model, *apiError) {
	m, ok := a.cfg.Config.Model(name)
	if ok {
		if plan, found := a.cfg.Config.Plan(p.Plan); !found || len(plan.Models) == 0 || slices.Contains(plan.Models, name) {
			return m, nil
		}
		// The model exists: say the plan (after a downgrade, the fallback
		// plan) is what stands in the way, not that it does not exist.
		return m, &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "model_not_in_plan", Param: "model",
			Message: fmt.Sprintf("The model `%s` is not in your account's current plan `%s`; change plans or settle the account's billing (POST /v1/billing/portal) to use it.", name, p.Plan)}
	}
	return m, toAPIError(llm.ModelNotFound(name))
}

func (a *API) chatCompletions(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	body, err := io.ReadAll(r.Body)
	if ae := bodyError(err); ae != nil {
		a.rejected.WithLabelValues("body").Inc()
		writeError(w, ae)
		return
	}
	if len(body) > checkBodyBytes {
		// A client over its limits is refused before a large body is parsed.
		if ae := a.refuseEarly(r.Context(), p); ae != nil {
			writeError(w, ae)
			return
		}
	}
	var c chatCall
	a.deep.run(func() { c = a.checkChat(r, p, body) })
	switch {
	case c.ae != nil:
		writeError(w, c.ae)
		return
	case c.err != nil:
		a.fail(w, r, c.err)
		return
	}
	writeRateHeaders(w, c.adm)
	switch {
	case c.run == nil:
		a.queueChat(w, r, c)
	case c.stream:
		a.streamInline(w, r, c.adm, c.run, body)
	default:
		a.runInline(w, r, c.adm, c.run)
	}
}

// chatCall is a chat request checked and admitted: to be queued (run is
// nil), or prepared to run inline (streamed or not). ae or err, when set,
// is the answer instead: a refusal, or a failure (the admission released).
type chatCall struct {
	md     events.Metadata
	cmd    completion.RequestCompletion
	adm    *admission.Admitted
	run    *execution.Inline
	stream bool
	ae     *apiError
	err    error
}

// checkChat validates a chat request, admits it and, unless the client
// asked for an asynchronous answer, prepares its inline run.
func (a *API) checkChat(r *http.Request, p principal, body []byte) chatCall {
	async := preferAsync(r)
	req, ae := validateChat(body)
	if ae == nil && async && req.Stream {
		ae = badRequest("unsupported_parameter", "stream", "A streamed request cannot be queued: drop Prefer: respond-async or stream.")
	}
	if ae == nil {
		// callback_url stays in the stored request; completion.SplitCallbackURL
		// takes it out of what the provider gets.
		ae = a.validateCallback(body)
	}
	if ae == nil {
		_, ae = a.modelFor(p, req.Model)
	}
	if ae != nil {
		a.rejected.WithLabelValues(ae.Code).Inc()
		return chatCall{ae: ae}
	}
	cid := correlationID(r.Context())
	c := chatCall{
		md: events.Metadata{AccountID: p.AccountID, CorrelationID: cid, CausationID: cid, Actor: "key:" + p.KeyID},
		cmd: completion.RequestCompletion{
			CompletionID: "chatcmpl-" + randomID(29), AccountID: p.AccountID, KeyID: p.KeyID,
			Model: req.Model, Mode: events.ModeSync, Request: body,
		},
		stream: req.Stream,
	}
	if c.adm, c.ae = a.admit(r.Context(), p, req.Model, c.cmd.CompletionID, body); c.ae != nil {
		return c
	}
	c.cmd.Reservation = c.adm.Reservation
	if async {
		c.cmd.Mode = events.ModeAsync
		return c
	}
	// Nothing is stored before the provider is called: the request, its
	// claim and its outcome are appended together (execution.Inline).
	if c.run, c.err = a.cfg.Executor.Prepare(c.md, c.cmd, "api:"+a.cfg.InstanceID); c.err != nil {
		a.admission.Release(r.Context(), c.adm)
	}
	return c
}

// queueChat records an admitted request as a job and answers 202.
func (a *API) queueChat(w http.ResponseWriter, r *http.Request, c chatCall) {
	job, err := a.recordRequest(r.Context(), c.md, c.cmd, nil)
	if err != nil {
		a.failRecord(w, r, c.adm, c.cmd.CompletionID, err)
		return
	}
	w.Header().Set("Preference-Applied", "respond-async")
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	writeJSON(w, http.StatusAccepted, toJobJSON(job))
}

// runInline runs a prepared completion for the client holding the
// connection. Until the response deadline a client that goes away cancels
// the provider call; past the deadline the client gets 202 with its job
// (stored first, if the run has not stored it yet) and the work goes on
// without it. The outcome is recorded either way.
//
// This goroutine, the connection's, waits here for as long as the
// provider works, and the run's goroutine in the call: both keep their
// frames small (the rare answers are built in functions of their own), so
// that each request in flight holds two stacks of 8 KiB (see deepStacks).
func (a *API) runInline(w http.ResponseWriter, r *http.Request, adm *admission.Admitted, p *execution.Inline) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	result := make(chan inlineOutcome, 1)
	a.inflight.Add(1)
	go a.execInline(runCtx, cancel, p, result)
	deadline := time.NewTimer(a.cfg.ResponseDeadline)
	defer deadline.Stop()
	select {
	case o := <-result:
		a.answerInline(w, r, adm, o)
	case <-r.Context().Done():
		cancel()
	case <-deadline.C:
		a.answerDeadline(w, r, adm, p)
	}
}

// inlineOutcome is what an inline run ended with: the response for the
// client, or the failure recorded, or the error that kept it from being
// recorded.
type inlineOutcome struct {
	response json.RawMessage
	failed   *events.CompletionFailed
	err      error
}

// execInline runs p (the run's goroutine) and sends its outcome.
func (a *API) execInline(ctx context.Context, cancel context.CancelFunc, p *execution.Inline, result chan<- inlineOutcome) {
	defer a.inflight.Done()
	defer cancel()
	done, err := a.cfg.Executor.RunInline(ctx, p)
	o := inlineOutcome{err: err, failed: done.Failed}
	if err == nil && done.Succeeded != nil {
		o.response = done.Succeeded.Response
	}
	result <- o
}

// answerInline answers the client with the outcome of its inline run.
//
//go:noinline
func (a *API) answerInline(w http.ResponseWriter, r *http.Request, adm *admission.Admitted, o inlineOutcome) {
	switch {
	case errors.Is(o.err, execution.ErrNotStored):
		a.admission.Release(r.Context(), adm)
		a.fail(w, r, o.err)
	case o.err != nil:
		a.fail(w, r, o.err)
	case o.failed != nil:
		writeError(w, failedError(o.failed))
	default:
		writeRaw(w, http.StatusOK, o.response)
	}
}

// answerDeadline answers 202 with the job a run still at work at the
// response deadline becomes, its request and claim stored first.
//
//go:noinline
func (a *API) answerDeadline(w http.ResponseWriter, r *http.Request, adm *admission.Admitted, p *execution.Inline) {
	a.deadlines.Inc()
	c := p.State()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), recordResolveFor)
	err := p.Store(sctx)
	cancel()
	if err != nil {
		// The run goes on and records its outcome when the store is
		// back: the answer names the job it becomes.
		a.failRecord(w, r, adm, c.ID, errors.Join(err, errUnresolved))
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+c.ID)
	writeJSON(w, http.StatusAccepted, toJobJSON(c))
}

// Wait blocks until every inline execution that outlived its request has
// recorded its outcome, or ctx ends.
func (a *API) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("inline completions still running: %w", ctx.Err())
	}
}

// preferAsync reports whether the client asked for an asynchronous answer
// (RFC 7240).
func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(pref), "respond-async") {
				return true
			}
		}
	}
	return false
}

func (a *API) listModels(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	out := openaiwire.ModelList{Object: "list", Data: []openaiwire.Model{}}
	for _, m := range a.cfg.Config.Models {
		if _, ae := a.modelFor(p, m.Name); ae == nil {
			out.Data = append(out.Data, openaiwire.Model{ID: m.Name, Object: "model", OwnedBy: "tollgate", Description: m.Description})
		}
	}
	writeJSON(w, http.StatusOK, out)
}
