package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llm/openaiwire"
	"github.com/tollgate/tollgate/quota/admission"
)

// streamInline answers a claimed completion as OpenAI server-sent events.
// Headers go out with the first chunk, so a failure before it is still an
// ordinary JSON error with its status. A client that disconnects cancels
// the provider call; what was generated is recorded and billed.
func (a *API) streamInline(w http.ResponseWriter, r *http.Request, adm *admission.Admitted, p *execution.Inline, body []byte) {
	wantUsage := openaiwire.WantsUsage(body)
	rc := http.NewResponseController(w)
	started := false
	start := func() {
		if started {
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // proxies must not buffer the stream
		w.WriteHeader(http.StatusOK)
		started = true
	}
	sawUsage := false
	emit := func(chunk json.RawMessage) error {
		if openaiwire.IsUsageChunk(chunk) {
			sawUsage = true
			if !wantUsage {
				return nil
			}
		}
		start()
		if _, err := fmt.Fprintf(w, "data: %s\n\n", chunk); err != nil {
			return err
		}
		return rc.Flush()
	}
	a.inflight.Add(1)
	defer a.inflight.Done()
	done, err := a.cfg.Executor.StreamInline(r.Context(), p, emit)
	if errors.Is(err, execution.ErrNotStored) {
		// Nothing was stored or billed: the reservation is free again.
		a.admission.Release(r.Context(), adm)
	}
	switch {
	case err != nil && !started:
		a.fail(w, r, err)
		return
	case err != nil:
		// The chunks above reached the client but their outcome was not
		// recorded (the claim was lost, or the store failed): say so
		// instead of ending as if the answer were complete.
		a.cfg.Logger.ErrorContext(r.Context(), "stream outcome", "correlation_id", correlationID(r.Context()), "error", err)
		if r.Context().Err() == nil {
			writeStreamError(w, rc, err)
		}
		return
	case done.Failed != nil && !started:
		writeError(w, failedError(done.Failed))
		return
	}
	if r.Context().Err() != nil {
		return // nobody is listening
	}
	if s := done.Succeeded; s != nil && wantUsage && !sawUsage {
		// The provider reported no usage: send Tollgate's count, as the
		// client asked for a usage chunk.
		usage, _ := json.Marshal(openaiwire.Usage{PromptTokens: s.Usage.PromptTokens, CompletionTokens: s.Usage.CompletionTokens, TotalTokens: s.Usage.TotalTokens})
		chunk, _ := json.Marshal(openaiwire.Chunk{ID: done.ID, Object: openaiwire.ObjectChunk, Model: done.Model,
			Choices: []openaiwire.ChunkChoice{}, Usage: usage})
		_ = emit(chunk)
	}
	start() // an empty stream still gets its headers
	if s := done.Succeeded; s != nil && s.Interrupted != "" {
		errBody, _ := json.Marshal(openaiwire.NewErrorBody("The provider stopped before finishing; the answer above is incomplete.",
			openaiwire.TypeUpstream, "", s.Interrupted))
		_, _ = fmt.Fprintf(w, "data: %s\n\n", errBody)
	}
	_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

// writeStreamError ends a started stream with an error event (no [DONE]):
// the answer above is incomplete and was not recorded.
func writeStreamError(w http.ResponseWriter, rc *http.ResponseController, err error) {
	e := openaiwire.NewErrorBody("The answer above is incomplete and was not recorded; nothing was billed. Send the request again.",
		openaiwire.TypeServer, "", "outcome_unrecorded")
	var le *llm.Error
	if errors.As(err, &le) {
		e = openaiwire.NewErrorBody(le.Message, le.Type, "", le.Code)
	}
	errBody, _ := json.Marshal(e)
	_, _ = fmt.Fprintf(w, "data: %s\n\n", errBody)
	_ = rc.Flush()
}
