package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/quota/admission"
)

// Bounds of the read-back of a request whose append failed without an
// answer: each read, and all of them.
const (
	recordReadTimeout = time.Second
	recordResolveFor  = 5 * time.Second
)

// errUnresolved: a request's append failed without an answer and reading
// the completion back did not tell whether it landed.
var errUnresolved = errors.New("request append unresolved")

// recordRequest appends a request (and, inline, its claim). An append that
// failed without an answer after it was sent (a statement timeout, a
// connection lost mid-statement: a hung server applies what it had
// received when it resumes) may have been applied, so it is resolved by
// reading the completion back for a while (a refused connection is
// answered at once: nothing was sent):
// found, the request goes on as if the append had answered (a queued job
// is answered 202 and runs once; an inline claim found is this request's
// own, and runs). Not found in time, the error wraps errUnresolved: the
// caller must then not release the budget reservation, which expires and
// is re-derived from the event log (the job may still run, and settles
// itself), so the limiter never forgets spend it would have released.
func (a *API) recordRequest(ctx context.Context, md events.Metadata, cmd completion.RequestCompletion, claim *completion.StartCompletion) (completion.Completion, error) {
	c, err := a.cfg.Service.RequestCompletion(ctx, md, cmd, claim)
	if err == nil || !pgstore.Ambiguous(err) {
		return c, err
	}
	deadline := time.Now().Add(recordResolveFor)
	for wait := 100 * time.Millisecond; time.Now().Before(deadline); wait = min(2*wait, time.Second) {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, errors.Join(err, errUnresolved)
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordReadTimeout)
		found, rerr := a.cfg.Service.Completion(rctx, cmd.CompletionID)
		cancel()
		switch {
		case rerr == nil && claim == nil:
			return found, nil
		case rerr == nil && found.Status == completion.StatusRunning && found.Executor == claim.Executor && found.Renewals == 0:
			return found, nil
		case rerr == nil:
			// Landed, and no longer as this request left it (a reaper
			// acted): what happens to it is in its stream.
			return c, errors.Join(err, errUnresolved)
		case errors.Is(rerr, domainerr.ErrNotFound):
			// Not (yet) applied: a paused server may still apply it.
		case !pgstore.Ambiguous(rerr):
			// The server refuses connections (it went down): it cannot
			// tell now, and the client is better told at once.
			deadline = time.Time{}
		}
	}
	a.cfg.Logger.WarnContext(ctx, "request append unresolved: its budget reservation is left to expire and be re-derived from the event log",
		"completion_id", cmd.CompletionID, "correlation_id", md.CorrelationID, "error", err)
	return c, errors.Join(err, errUnresolved)
}

// failRecord answers a request whose append failed. Its reservation is
// released, unless the append is unresolved: then the answer names the job
// the request may have become (message and Location), so that the client
// can look before it sends the request again.
func (a *API) failRecord(w http.ResponseWriter, r *http.Request, adm *admission.Admitted, completionID string, err error) {
	if !errors.Is(err, errUnresolved) {
		a.admission.Release(r.Context(), adm)
		a.fail(w, r, err)
		return
	}
	ae := toAPIError(err)
	ae.Message += fmt.Sprintf(" The request may have been recorded as job %[1]s: GET /v1/jobs/%[1]s says whether it was, before you send it again.", completionID)
	w.Header().Set("Location", "/v1/jobs/"+completionID)
	a.cfg.Logger.ErrorContext(r.Context(), "request failed", "correlation_id", correlationID(r.Context()), "completion_id", completionID, "error", err)
	writeError(w, ae)
}
