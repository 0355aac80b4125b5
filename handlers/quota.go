package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/admission"
	quotastate "github.com/tollgate/tollgate/quota/state"
	"github.com/tollgate/tollgate/tokens"
)

// QuotaDeps is what admission control needs.
type QuotaDeps struct {
	// Limiter keeps the rate windows and budgets (quota/redis across
	// replicas, quota/memory for one). Nil: an in-process limiter.
	Limiter quota.Limiter
	// Tokens bounds prompts for reservations; nil: a default counter (it
	// tokenizes up to 256 KiB of text and bounds bigger prompts by bytes).
	Tokens *tokens.Counter
}

// checkBodyBytes is the body size from which admission first asks the
// limiter whether a minimal request would pass, before reading the body:
// a client over its rate limit or budget costs no parsing or counting.
// Smaller bodies cost less to read than the extra round trip.
const checkBodyBytes = 16 << 10

// quotaPrincipal is what admission needs of a key and its account.
type quotaPrincipal struct {
	Account   events.LimitOverrides
	Key       events.LimitOverrides
	Suspended *events.APIKeySuspended
}

// admissionOf is what admission needs of p.
func admissionOf(p principal) admission.Principal {
	return admission.Principal{AccountID: p.AccountID, KeyID: p.KeyID, Plan: p.Plan,
		Account: p.Quota.Account, Key: p.Quota.Key, Suspended: p.Quota.Suspended}
}

// refuseEarly asks the limiter whether a minimal request of p would pass,
// counting nothing; a 429 (or 503) when it would not. It runs before a
// large body is parsed.
func (a *API) refuseEarly(ctx context.Context, p principal) *apiError {
	err := a.admission.Check(ctx, admissionOf(p))
	var refused *admission.RefusedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		a.rejected.WithLabelValues(string(refused.Decision.Reason)).Inc()
		return refusal(refused.Decision)
	}
	a.cfg.Logger.ErrorContext(ctx, "admission", slog.String("correlation_id", correlationID(ctx)), slog.Any("error", err))
	return toAPIError(err)
}

// refusal is the 429 of a decision, with its headers.
func refusal(d quota.Decision) *apiError {
	ae := rejection(d)
	ae.Header = rateHeaders(d)
	ae.Header["Retry-After"] = strconv.FormatInt(int64(math.Ceil(d.RetryAfter.Seconds())), 10)
	return ae
}

// admit runs admission control for a chat request (see
// admission.Admitter.Admit) and maps its refusals to their answers.
func (a *API) admit(ctx context.Context, p principal, modelName, completionID string, body []byte) (*admission.Admitted, *apiError) {
	model, ok := a.cfg.Config.Model(modelName)
	if !ok {
		return nil, toAPIError(llm.ModelNotFound(modelName))
	}
	adm, err := a.admission.Admit(ctx, admissionOf(p), model, completionID, body)
	var (
		suspended *admission.SuspendedError
		invalid   *admission.InvalidError
		refused   *admission.RefusedError
	)
	switch {
	case err == nil:
		return adm, nil
	case errors.As(err, &suspended):
		a.rejected.WithLabelValues("api_key_suspended").Inc()
		return nil, &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "api_key_suspended",
			Message: fmt.Sprintf("This API key is suspended (%s); an operator must lift the suspension.", suspended.Suspension.Reason)}
	case errors.As(err, &invalid):
		return nil, badRequest("invalid_value", invalid.Param, "%s", invalid.Message)
	case errors.As(err, &refused):
		return nil, refusal(refused.Decision)
	}
	a.cfg.Logger.ErrorContext(ctx, "admission", slog.String("correlation_id", correlationID(ctx)), slog.Any("error", err))
	return nil, toAPIError(err)
}

// writeRateHeaders sets the x-ratelimit-* headers of an admitted request.
func writeRateHeaders(w http.ResponseWriter, ad *admission.Admitted) {
	for k, v := range rateHeaders(ad.Decision) {
		w.Header().Set(k, v)
	}
}

// rateHeaders are OpenAI's x-ratelimit-* headers for the binding scope.
func rateHeaders(d quota.Decision) map[string]string {
	h := map[string]string{}
	if d.Requests.Limit > 0 {
		h["x-ratelimit-limit-requests"] = strconv.FormatInt(d.Requests.Limit, 10)
		h["x-ratelimit-remaining-requests"] = strconv.FormatInt(d.Requests.Remaining, 10)
		h["x-ratelimit-reset-requests"] = formatReset(d.Requests.Reset)
	}
	if d.Tokens.Limit > 0 {
		h["x-ratelimit-limit-tokens"] = strconv.FormatInt(d.Tokens.Limit, 10)
		h["x-ratelimit-remaining-tokens"] = strconv.FormatInt(d.Tokens.Remaining, 10)
		h["x-ratelimit-reset-tokens"] = formatReset(d.Tokens.Reset)
	}
	return h
}

// formatReset writes a duration the way OpenAI does ("1s", "6m0s", "120ms").
func formatReset(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	return d.Round(time.Millisecond).String()
}

// rejection is the 429 a rejected request gets, naming the limit.
func rejection(d quota.Decision) *apiError {
	after := formatReset(d.RetryAfter)
	scope := "account"
	switch d.Reason {
	case quota.KeyRequestsPerMinute, quota.KeyTokensPerMinute, quota.KeyDailyBudget, quota.KeyMonthlyBudget:
		scope = "API key"
	}
	ae := &apiError{Status: http.StatusTooManyRequests, Type: "requests", Code: string(d.Reason)}
	switch d.Reason {
	case quota.KeyRequestsPerMinute, quota.AccountRequestsPerMinute:
		ae.Message = fmt.Sprintf("Rate limit reached for requests per minute on this %s: limit %d. Please try again in %s.", scope, d.Requests.Limit, after)
	case quota.KeyTokensPerMinute, quota.AccountTokensPerMinute:
		ae.Type = "tokens"
		ae.Message = fmt.Sprintf("Rate limit reached for tokens per minute on this %s: limit %d, remaining %d. Please try again in %s.", scope, d.Tokens.Limit, d.Tokens.Remaining, after)
	case quota.KeyDailyBudget, quota.AccountDailyBudget:
		ae.Type = "insufficient_quota"
		ae.Message = fmt.Sprintf("The daily budget of this %s is spent (or reserved by requests in flight). It renews in %s.", scope, after)
	default:
		ae.Type = "insufficient_quota"
		ae.Message = fmt.Sprintf("The monthly budget of this %s is spent (or reserved by requests in flight). It renews in %s.", scope, after)
	}
	return ae
}

// quotaRoutes adds the quota endpoints.
func (a *API) quotaRoutes(admin, client *mux.Router) {
	client.HandleFunc("/quota", a.getOwnQuota).Methods(http.MethodGet)
	admin.HandleFunc("/accounts/{id}/quota", a.getAccountQuota).Methods(http.MethodGet)
	admin.HandleFunc("/accounts/{id}", a.patchAccount).Methods(http.MethodPatch)
	admin.HandleFunc("/keys/{id}", a.patchKey).Methods(http.MethodPatch)
}

type budgetJSON struct {
	Period       string  `json:"period"`
	LimitUSD     *string `json:"limit_usd"`
	SpentUSD     string  `json:"spent_usd"`
	ReservedUSD  string  `json:"reserved_usd"`
	RemainingUSD *string `json:"remaining_usd"`
	ResetsAt     string  `json:"resets_at"`
}

type rateJSON struct {
	Limit     int64  `json:"limit"`
	Used      int64  `json:"used"`
	Remaining *int64 `json:"remaining"`
	Reset     string `json:"reset"`
}

type scopeJSON struct {
	Scope             string       `json:"scope"`
	ID                string       `json:"id"`
	RequestsPerMinute rateJSON     `json:"requests_per_minute"`
	TokensPerMinute   rateJSON     `json:"tokens_per_minute"`
	Budgets           []budgetJSON `json:"budgets"`
	Suspended         bool         `json:"suspended,omitempty"`
}

func usd(n money.NanoUSD) string { return n.USD() }

func toScopeJSON(scope, id string, l quota.Limits, u quota.ScopeUsage, now time.Time) scopeJSON {
	day, month, dayEnd, monthEnd := quota.Periods(now)
	rate := func(limit, used int64) rateJSON {
		r := rateJSON{Limit: limit, Used: used, Reset: formatReset(u.Reset)}
		if limit > 0 {
			rem := max(limit-used, 0)
			r.Remaining = &rem
		}
		return r
	}
	budget := func(period string, limit money.NanoUSD, b quota.Budget, end time.Time) budgetJSON {
		j := budgetJSON{Period: period, SpentUSD: usd(b.Spent), ReservedUSD: usd(b.Reserved), ResetsAt: end.Format(time.RFC3339)}
		if limit >= 0 {
			ls, rs := usd(limit), usd(max(limit-b.Spent-b.Reserved, 0))
			j.LimitUSD, j.RemainingUSD = &ls, &rs
		}
		return j
	}
	return scopeJSON{Scope: scope, ID: id,
		RequestsPerMinute: rate(l.RequestsPerMinute, u.Requests), TokensPerMinute: rate(l.TokensPerMinute, u.Tokens),
		Budgets: []budgetJSON{budget("day:"+day, l.DailyBudget, u.Day, dayEnd), budget("month:"+month, l.MonthlyBudget, u.Month, monthEnd)}}
}

// getOwnQuota shows the caller its limits and what remains, live.
func (a *API) getOwnQuota(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	now := a.cfg.Now()
	u, err := a.cfg.Quota.Limiter.Peek(r.Context(), p.AccountID, p.KeyID, now)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	key := toScopeJSON("key", p.KeyID, admission.OverrideLimits(quota.Unlimited(), p.Quota.Key), u.Key, now)
	key.Suspended = p.Quota.Suspended != nil
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "quota", "plan": p.Plan,
		"account": toScopeJSON("account", p.AccountID, admission.AccountLimits(a.cfg.Config, p.Plan, p.Quota.Account), u.Account, now),
		"key":     key,
	})
}

// getAccountQuota shows an operator an account's limits and live figures,
// and the quota_state read model's rows of the account and its keys.
func (a *API) getAccountQuota(w http.ResponseWriter, r *http.Request) {
	acc, err := a.cfg.Service.Account(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	now := a.cfg.Now()
	u, err := a.cfg.Quota.Limiter.Peek(r.Context(), acc.ID, "", now)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rows, err := quotastate.Of(r.Context(), a.cfg.ReadModels, acc.ID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "quota", "plan": acc.EffectivePlan(),
		"account": toScopeJSON("account", acc.ID, admission.AccountLimits(a.cfg.Config, acc.EffectivePlan(), acc.Limits), u.Account, now),
		"state":   rows,
	})
}

// limitsJSON is a PATCH's limits: a missing or null field takes the
// plan's (for a key: the account's) value.
type limitsJSON struct {
	RequestsPerMinute *int64  `json:"requests_per_minute"`
	TokensPerMinute   *int64  `json:"tokens_per_minute"`
	DailyBudgetUSD    *string `json:"daily_budget_usd"`
	MonthlyBudgetUSD  *string `json:"monthly_budget_usd"`
}

func (l limitsJSON) overrides() (events.LimitOverrides, *apiError) {
	o := events.LimitOverrides{RequestsPerMinute: l.RequestsPerMinute, TokensPerMinute: l.TokensPerMinute}
	for _, r := range []struct {
		v     *int64
		param string
	}{{l.RequestsPerMinute, "limits.requests_per_minute"}, {l.TokensPerMinute, "limits.tokens_per_minute"}} {
		if r.v != nil && *r.v < 0 {
			return o, badRequest("invalid_value", r.param, "%s must not be negative (0 is unlimited), got %d.", r.param, *r.v)
		}
	}
	for _, b := range []struct {
		in    *string
		out   **int64
		param string
	}{{l.DailyBudgetUSD, &o.DailyBudgetNanoUSD, "limits.daily_budget_usd"}, {l.MonthlyBudgetUSD, &o.MonthlyBudgetNanoUSD, "limits.monthly_budget_usd"}} {
		if b.in == nil {
			continue
		}
		n, err := money.ParseUSD(*b.in)
		if err != nil {
			return o, badRequest("invalid_value", b.param, "%q is not a USD amount such as \"10.00\".", clip(*b.in))
		}
		v := int64(n)
		*b.out = &v
	}
	return o, nil
}

func (a *API) patchAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Plan   *string     `json:"plan"`
		Limits *limitsJSON `json:"limits"`
	}
	ae := decodeJSON(r, &req)
	if ae != nil {
		writeError(w, ae)
		return
	}
	// Everything is validated before the first change, so that a refused
	// PATCH changes nothing.
	var o events.LimitOverrides
	if req.Limits != nil {
		if o, ae = req.Limits.overrides(); ae != nil {
			writeError(w, ae)
			return
		}
	}
	if req.Plan != nil {
		if ae := checkText("plan", *req.Plan); ae != nil {
			writeError(w, ae)
			return
		}
	}
	id, md := mux.Vars(r)["id"], a.adminMetadata(r)
	acc, err := a.cfg.Service.Account(r.Context(), id)
	if req.Plan != nil && err == nil {
		acc, err = a.cfg.Service.ChangePlan(r.Context(), md, id, account.ChangePlan{Plan: *req.Plan})
	}
	if req.Limits != nil && err == nil {
		acc, err = a.cfg.Service.ChangeAccountLimits(r.Context(), md, id, o)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAccountJSON(acc))
}

func (a *API) patchKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Limits    *limitsJSON `json:"limits"`
		Suspended *bool       `json:"suspended"`
	}
	ae := decodeJSON(r, &req)
	if ae != nil {
		writeError(w, ae)
		return
	}
	var o events.LimitOverrides
	if req.Limits != nil {
		if o, ae = req.Limits.overrides(); ae != nil {
			writeError(w, ae)
			return
		}
	}
	id, md := mux.Vars(r)["id"], a.adminMetadata(r)
	k, err := a.cfg.Service.APIKey(r.Context(), id)
	if req.Limits != nil && err == nil {
		k, err = a.cfg.Service.ChangeAPIKeyLimits(r.Context(), md, id, o)
	}
	if req.Suspended != nil && err == nil {
		if *req.Suspended {
			k, err = a.cfg.Service.SuspendAPIKey(r.Context(), md, id)
		} else {
			k, err = a.cfg.Service.UnsuspendAPIKey(r.Context(), md, id)
		}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := map[string]any{"id": k.ID, "object": "api_key", "account_id": k.AccountID, "revoked": k.Revoked,
		"suspended": k.Suspended != nil, "limits": k.Limits}
	if k.Suspended != nil {
		out["suspension"] = k.Suspended
	}
	writeJSON(w, http.StatusOK, out)
}
