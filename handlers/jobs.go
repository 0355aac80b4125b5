package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/projections"
)

// jobJSON is a completion request as a job.
type jobJSON struct {
	ID         string          `json:"id"`
	Object     string          `json:"object"`
	Status     string          `json:"status"`
	Model      string          `json:"model"`
	Mode       string          `json:"mode"`
	CreatedAt  int64           `json:"created_at"`
	StartedAt  *int64          `json:"started_at"`
	FinishedAt *int64          `json:"finished_at"`
	Response   json.RawMessage `json:"response,omitempty"`
	Error      *jobError       `json:"error,omitempty"`
	URL        string          `json:"url"`
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

func toJobJSON(c commands.Completion) jobJSON {
	j := jobJSON{
		ID: c.ID, Object: "job", Status: string(c.Status), Model: c.Model, Mode: c.Mode,
		CreatedAt: c.RequestedAt.Unix(), StartedAt: unixPtr(c.StartedAt), FinishedAt: unixPtr(c.FinishedAt),
		URL: "/v1/jobs/" + c.ID,
	}
	if c.Succeeded != nil {
		j.Response = c.Succeeded.Response
	}
	if f := c.Failed; f != nil {
		j.Error = &jobError{Message: f.ErrorMessage, Type: f.ErrorType, Code: f.ErrorCode, Status: f.Status}
	}
	return j
}

// getJob reads the completion's own stream, not a read model, so a client
// that polls right after its 202 always finds its job.
func (a *API) getJob(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	c, err := a.cfg.Service.Completion(r.Context(), mux.Vars(r)["id"])
	if err == nil && c.AccountID != p.AccountID {
		err = commands.ErrNotFound // another account's job does not exist for this caller
	}
	if err != nil {
		if errors.Is(err, commands.ErrNotFound) {
			writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "job_not_found", Message: "No such job."})
			return
		}
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toJobJSON(c))
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
	jobs, err := projections.ListJobs(r.Context(), a.cfg.ReadModels, p.AccountID, limit)
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

func toUsageJSON(u projections.UsageRow) usageJSON {
	return usageJSON{
		Group: u.Group, Requests: u.Requests, PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		TotalTokens: u.PromptTokens + u.CompletionTokens, CostNanoUSD: u.CostNanoUSD, CostUSD: money.NanoUSD(u.CostNanoUSD).USD(),
	}
}

// parseTime accepts a date (2026-11-27), an RFC 3339 time or Unix seconds.
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a date (2026-11-27), an RFC 3339 time or Unix seconds", s)
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
	rows, err := projections.Usage(r.Context(), a.cfg.ReadModels, p.AccountID, from, to, groupBy)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	data := make([]usageJSON, 0, len(rows))
	var total projections.UsageRow
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
