package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/usage"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/callbacks"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/money"
)

// jobJSON is a completion request as a job.
type jobJSON struct {
	ID         string `json:"id"`
	Object     string `json:"object"`
	Status     string `json:"status"`
	Model      string `json:"model"`
	Mode       string `json:"mode"`
	CreatedAt  int64  `json:"created_at"`
	StartedAt  *int64 `json:"started_at"`
	FinishedAt *int64 `json:"finished_at"`
	// LeaseExpiresAt, while the job runs, is when its executor's claim
	// ends unless renewed (it is renewed while the work makes progress).
	LeaseExpiresAt *int64          `json:"lease_expires_at,omitempty"`
	Response       json.RawMessage `json:"response,omitempty"`
	Error          *jobError       `json:"error,omitempty"`
	URL            string          `json:"url"`
	// Callback is present when the request named a callback URL.
	Callback *jobCallback `json:"callback,omitempty"`
}

// jobCallback is a job's result callback: where, and how it went
// (pending, delivered or failed).
type jobCallback struct {
	URL      string `json:"url"`
	Status   string `json:"status"`
	Attempts int    `json:"attempts,omitempty"`
}

type jobError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Status  int    `json:"status"`
}

func unixPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func toJobJSON(c completion.Completion) jobJSON {
	j := jobJSON{
		ID: c.ID, Object: "job", Status: string(c.Status), Model: c.Model, Mode: c.Mode,
		CreatedAt: c.RequestedAt.Unix(), StartedAt: unixPtr(c.StartedAt), FinishedAt: unixPtr(c.FinishedAt),
		URL: "/v1/jobs/" + c.ID,
	}
	if c.Status == completion.StatusRunning {
		j.LeaseExpiresAt = unixPtr(c.LeaseExpiresAt)
	}
	if c.Succeeded != nil {
		j.Response = c.Succeeded.Response
	}
	if f := c.Failed; f != nil {
		j.Error = &jobError{Message: f.ErrorMessage, Type: f.ErrorType, Code: f.ErrorCode, Status: f.Status}
	}
	if c.Abandoned != nil {
		j.Error = &jobError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "job_abandoned",
			Message: "The request was abandoned: the process running it stopped renewing its claim (it died, hung or lost the database) before it finished. Nothing was billed; send it again."}
	}
	if c.CallbackURL != "" {
		j.Callback = &jobCallback{URL: c.CallbackURL, Status: "pending"}
		switch {
		case c.CallbackDelivered != nil:
			j.Callback.Status, j.Callback.Attempts = "delivered", c.CallbackDelivered.Attempts
		case c.CallbackFailed != nil:
			j.Callback.Status, j.Callback.Attempts = "failed", c.CallbackFailed.Attempts
		}
	}
	return j
}

// JobBody is the JSON of a job as GET /v1/jobs/{id} shows it: the body a
// result callback carries.
func JobBody(c completion.Completion) ([]byte, error) {
	return json.Marshal(toJobJSON(c))
}

// JobsDeps is what the job endpoints need beyond the API's own config.
type JobsDeps struct {
	// MaxWait bounds GET /v1/jobs/{id}?wait=; longer waits are cut to it.
	// Default 60s.
	MaxWait time.Duration
	// PollInterval is the first pause between a long-poll's reads of the
	// job's stream; it grows to 1s. Default 100ms.
	PollInterval time.Duration
	// Waiters counts the long-polls waiting now; nil = not measured.
	Waiters prometheus.Gauge
}

// NewWaitersGauge returns the long-poll waiters gauge, registered on reg.
func NewWaitersGauge(reg prometheus.Registerer) (prometheus.Gauge, error) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tollgate_job_waiters",
		Help: "GET /v1/jobs/{id}?wait= requests waiting for their job now.",
	})
	if reg != nil {
		if err := reg.Register(g); err != nil {
			return nil, fmt.Errorf("handlers: register job waiters: %w", err)
		}
	}
	return g, nil
}

func (d JobsDeps) maxWait() time.Duration {
	if d.MaxWait > 0 {
		return d.MaxWait
	}
	return 60 * time.Second
}

func (d JobsDeps) pollInterval() time.Duration {
	if d.PollInterval > 0 {
		return d.PollInterval
	}
	return 100 * time.Millisecond
}

// maxPollInterval caps the long-poll's pause between reads.
const maxPollInterval = time.Second

// parseWait reads ?wait=: a Go duration ("30s") or whole seconds ("30"),
// cut to max.
func parseWait(s string, max time.Duration) (time.Duration, *apiError) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseInt(s, 10, 64)
		if nerr != nil {
			return 0, badRequest("invalid_value", "wait", "wait must be a duration such as 30s, or seconds.")
		}
		if n < 0 {
			return 0, badRequest("invalid_value", "wait", "wait must not be negative.")
		}
		// Compared in seconds: n * time.Second overflows past 292 years.
		if n >= int64(max/time.Second) {
			return max, nil
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, badRequest("invalid_value", "wait", "wait must not be negative.")
	}
	return min(d, max), nil
}

// validateCallback checks the optional callback_url field of a chat
// request at the edge. Without a signing secret callbacks are off, and a
// request asking for one is refused rather than silently never called back.
func (a *API) validateCallback(body []byte) *apiError {
	var v struct {
		CallbackURL *json.RawMessage `json:"callback_url"`
	}
	if !bytes.Contains(body, []byte(`"`+completion.CallbackURLField+`"`)) || json.Unmarshal(body, &v) != nil || v.CallbackURL == nil {
		return nil
	}
	if a.cfg.Config.Env.CallbackSecret == "" {
		return badRequest("callbacks_disabled", completion.CallbackURLField, "Callbacks are not enabled on this server (TOLLGATE_CALLBACK_SECRET is not set): poll GET /v1/jobs/{id}?wait=60s instead.")
	}
	var u string
	if err := json.Unmarshal(*v.CallbackURL, &u); err != nil {
		return badRequest("invalid_type", completion.CallbackURLField, "callback_url must be a string.")
	}
	// The dispatcher's rule (callbacks.CheckURL), so a URL refused when
	// sent is refused here first.
	if err := callbacks.CheckURL(u, a.cfg.Config.Jobs.Callbacks.AllowPrivateNetworks); err != nil {
		return badRequest("invalid_value", completion.CallbackURLField, "%s", err.Error())
	}
	return nil
}

// getJob reads the completion's own stream, not a read model, so a client
// that polls right after its 202 always finds its job. With ?wait= it
// long-polls: it answers as soon as the job is finished, or when the wait
// is over with the job as it stands. A waiter holds no database
// connection: it re-reads the stream (one short query) after a pause that
// grows from PollInterval to a second.
func (a *API) getJob(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	wait, ae := parseWait(r.URL.Query().Get("wait"), a.cfg.Jobs.maxWait())
	if ae != nil {
		writeError(w, ae)
		return
	}
	id := mux.Vars(r)["id"]
	c, err := a.cfg.Service.Completion(r.Context(), id)
	if err == nil && c.AccountID != p.AccountID {
		err = domainerr.ErrNotFound // another account's job does not exist for this caller
	}
	if err == nil && wait > 0 && !c.Finished() {
		c, err = a.waitJob(r.Context(), c, wait)
		if r.Context().Err() != nil {
			return // the client went away while waiting
		}
	}
	if err != nil {
		if errors.Is(err, domainerr.ErrNotFound) {
			writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "job_not_found", Message: "No such job."})
			return
		}
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toJobJSON(c))
}

// waitJob re-reads c's stream until it is finished, wait is over or ctx ends.
func (a *API) waitJob(ctx context.Context, c completion.Completion, wait time.Duration) (completion.Completion, error) {
	if g := a.cfg.Jobs.Waiters; g != nil {
		g.Inc()
		defer g.Dec()
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	pause := a.cfg.Jobs.pollInterval()
	for !c.Finished() {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, ctx.Err()
		case <-deadline.C:
			t.Stop()
			return c, nil
		case <-t.C:
		}
		next, err := a.cfg.Service.Completion(ctx, c.ID)
		if err != nil {
			return c, err
		}
		c = next
		pause = min(pause*2, maxPollInterval)
	}
	return c, nil
}

// jobEvents serves GET /v1/jobs/{id}/events: every event of the request's
// stream in order, as envelopes. The prompt and the answer (the request's
// "request" and the success's "response") are left out unless the caller
// asks with ?include=bodies, so a timeline can be shared with operators
// without the content.
func (a *API) jobEvents(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	withBodies := false
	switch inc := r.URL.Query().Get("include"); inc {
	case "":
	case "bodies":
		withBodies = true
	default:
		writeError(w, badRequest("invalid_value", "include", "include must be empty or bodies."))
		return
	}
	c, evs, err := a.cfg.Service.CompletionHistory(r.Context(), mux.Vars(r)["id"])
	if err == nil && c.AccountID != p.AccountID {
		err = domainerr.ErrNotFound
	}
	if err != nil {
		if errors.Is(err, domainerr.ErrNotFound) {
			writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "job_not_found", Message: "No such job."})
			return
		}
		a.fail(w, r, err)
		return
	}
	out := make([]events.Envelope, len(evs))
	for i, e := range evs {
		if !withBodies {
			e.Data = redactBodies(e)
		}
		out[i] = e
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "job_id": c.ID, "data": out})
}

// redactBodies returns e's data without the fields that hold the prompt
// or the answer.
func redactBodies(e events.Envelope) json.RawMessage {
	var field string
	switch e.Type {
	case events.TypeCompletionRequested:
		field = "request"
	case events.TypeCompletionSucceeded:
		field = "response"
	default:
		return e.Data
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(e.Data, &m); err != nil {
		return json.RawMessage(`{}`) // never leak what could not be redacted
	}
	delete(m, field)
	out, err := json.Marshal(m)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return out
}

func (a *API) listJobs(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			writeError(w, badRequest("invalid_value", "limit", "limit must be an integer from 1 to 100."))
			return
		}
		limit = n
	}
	jobs, err := jobs.List(r.Context(), a.cfg.ReadModels, p.AccountID, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": jobs})
}

// usageJSON is one usage row.
type usageJSON struct {
	Group            string `json:"group,omitempty"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	CostNanoUSD      int64  `json:"cost_nano_usd"`
	CostUSD          string `json:"cost_usd"`
}

func toUsageJSON(u usage.Row) usageJSON {
	return usageJSON{
		Group: u.Group, Requests: u.Requests, PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		TotalTokens: u.PromptTokens + u.CompletionTokens, CostNanoUSD: u.CostNanoUSD, CostUSD: money.NanoUSD(u.CostNanoUSD).USD(),
	}
}

// Times a client may give: PostgreSQL's timestamptz and Go's RFC 3339
// both hold years 1 to 9999, so that is the range accepted.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// parseTime accepts a date (2026-11-27), an RFC 3339 time or Unix seconds,
// from year 1 to 9999 (in UTC).
func parseTime(s string) (time.Time, error) {
	t, err := parseAnyTime(s)
	if err != nil {
		return t, err
	}
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, outOfRange(s)
	}
	return t, nil
}

func parseAnyTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < minTime.Unix() || n > maxTime.Unix() {
			// Checked before time.Unix, which overflows near the int64 limits.
			return time.Time{}, outOfRange(s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a date (2026-11-27), an RFC 3339 time or Unix seconds", clip(s))
}

func outOfRange(s string) error {
	return fmt.Errorf("%q is outside the years 1 to 9999 (UTC); as Unix seconds, from %d to %d", clip(s), minTime.Unix(), maxTime.Unix())
}

func (a *API) usage(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	today := a.cfg.Now().UTC().Truncate(24 * time.Hour)
	from, to := today.AddDate(0, 0, -29), today.AddDate(0, 0, 1)
	var err error
	if s := q.Get("from"); s != "" {
		if from, err = parseTime(s); err != nil {
			writeError(w, badRequest("invalid_value", "from", "from: %s", err))
			return
		}
	}
	if s := q.Get("to"); s != "" {
		if to, err = parseTime(s); err != nil {
			writeError(w, badRequest("invalid_value", "to", "to: %s", err))
			return
		}
	}
	if !to.After(from) {
		writeError(w, badRequest("invalid_value", "to", "to must be after from."))
		return
	}
	groupBy := q.Get("group_by")
	switch groupBy {
	case "", "model", "day", "key":
	default:
		writeError(w, badRequest("invalid_value", "group_by", "group_by must be model, day or key."))
		return
	}
	rows, err := usage.Query(r.Context(), a.cfg.ReadModels, p.AccountID, from, to, groupBy)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	data := make([]usageJSON, 0, len(rows))
	var total usage.Row
	for _, u := range rows {
		data = append(data, toUsageJSON(u))
		total.Requests += u.Requests
		total.PromptTokens += u.PromptTokens
		total.CompletionTokens += u.CompletionTokens
		total.CostNanoUSD += u.CostNanoUSD
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "usage", "account_id": p.AccountID, "from": from.Format(time.RFC3339), "to": to.Format(time.RFC3339),
		"group_by": groupBy, "data": data, "total": toUsageJSON(total),
	})
}
