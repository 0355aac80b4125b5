package handlers

import (
	"context"
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
		writeError(w, ae)
		return
	}
	cid := correlationID(r.Context())
	md := events.Metadata{AccountID: p.AccountID, CorrelationID: cid, CausationID: cid, Actor: "key:" + p.KeyID}
	cmd := completion.RequestCompletion{
		CompletionID: "chatcmpl-" + randomID(29), AccountID: p.AccountID, KeyID: p.KeyID,
		Model: req.Model, Mode: events.ModeSync, Request: body,
	}
	adm, ae := a.admit(r.Context(), p, req.Model, cmd.CompletionID, body)
	if ae != nil {
		writeError(w, ae)
		return
	}
	writeRateHeaders(w, adm)
	cmd.Reservation = adm.Reservation
	if async {
		cmd.Mode = events.ModeAsync
		c, err := a.recordRequest(r.Context(), md, cmd, nil)
		if err != nil {
			a.failRecord(w, r, adm, cmd.CompletionID, err)
			return
		}
		w.Header().Set("Preference-Applied", "respond-async")
		w.Header().Set("Location", "/v1/jobs/"+c.ID)
		writeJSON(w, http.StatusAccepted, toJobJSON(c))
		return
	}
	// Nothing is stored before the provider is called: the request, its
	// claim and its outcome are appended together (execution.Inline).
	run, err := a.cfg.Executor.Prepare(md, cmd, "api:"+a.cfg.InstanceID)
	if err != nil {
		a.admission.Release(r.Context(), adm)
		a.fail(w, r, err)
		return
	}
	if req.Stream {
		a.streamInline(w, r, adm, run, body)
		return
	}
	a.runInline(w, r, adm, run)
}

// runInline runs a prepared completion for the client holding the
// connection. Until the response deadline a client that goes away cancels
// the provider call; past the deadline the client gets 202 with its job
// (stored first, if the run has not stored it yet) and the work goes on
// without it. The outcome is recorded either way.
func (a *API) runInline(w http.ResponseWriter, r *http.Request, adm *admission.Admitted, p *execution.Inline) {
	c := p.State()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	type outcome struct {
		done completion.Completion
		err  error
	}
	result := make(chan outcome, 1)
	a.inflight.Add(1)
	go func() {
		defer a.inflight.Done()
		defer cancel()
		done, err := a.cfg.Executor.RunInline(runCtx, p)
		result <- outcome{done, err}
	}()
	deadline := time.NewTimer(a.cfg.ResponseDeadline)
	defer deadline.Stop()
	select {
	case o := <-result:
		switch {
		case errors.Is(o.err, execution.ErrNotStored):
			a.admission.Release(r.Context(), adm)
			a.fail(w, r, o.err)
		case o.err != nil:
			a.fail(w, r, o.err)
		case o.done.Succeeded != nil:
			writeRaw(w, http.StatusOK, o.done.Succeeded.Response)
		case o.done.Failed != nil:
			writeError(w, failedError(o.done.Failed))
		}
	case <-r.Context().Done():
		cancel()
	case <-deadline.C:
		a.deadlines.Inc()
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
