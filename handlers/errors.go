package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llm/openaiwire"
	"github.com/tollgate/tollgate/quota"
)

// apiError is an error with the HTTP status and the OpenAI error fields
// the client gets.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Message string
	Param   string
	// Header is set on the response (Retry-After, x-ratelimit-*).
	Header map[string]string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

func badRequest(code, param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// errorBody is OpenAI's error body.
type errorBody = openaiwire.ErrorBody

// toAPIError maps every error a handler can meet to what the client sees.
// It is the one place where domain outcomes become HTTP statuses.
func toAPIError(err error) *apiError {
	var ae *apiError
	var le *llm.Error
	var ve *domainerr.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, stripe.ErrWebhookSignature):
		return badRequest("invalid_signature", "", "The Stripe-Signature header does not verify with STRIPE_WEBHOOK_SECRET (or is older than the tolerance).")
	case errors.Is(err, stripe.ErrWebhookPayload):
		return badRequest("invalid_payload", "", "The body is not a Stripe event Tollgate can read.")
	case errors.Is(err, stripe.ErrBillingNotConfigured):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "billing_not_configured", Message: "Billing is not configured on this server."}
	case errors.Is(err, stripe.ErrStripeUnavailable):
		return &apiError{Status: http.StatusBadGateway, Type: "server_error", Code: "billing_provider_error", Message: "Stripe could not be reached or refused the request; retry later."}
	case errors.Is(err, stripe.ErrAlreadySubscribed):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "already_subscribed", Message: "This account already has a subscription; change plans in the billing portal (POST /v1/billing/portal)."}
	case errors.Is(err, billing.ErrNoBillingCustomer):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "no_billing_customer", Message: "This account has no billing customer yet; subscribe first (POST /v1/billing/checkout)."}
	case errors.Is(err, domainerr.ErrRevoked):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "api_key_revoked", Message: "This API key is revoked."}
	case errors.As(err, &le):
		return &apiError{Status: le.Status, Type: le.Type, Code: le.Code, Param: le.Param, Message: le.Message}
	case errors.As(err, &ve):
		return badRequest("invalid_value", ve.Field, "%s", ve.Error())
	case errors.Is(err, domainerr.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Message: "No such object."}
	case errors.Is(err, domainerr.ErrAlreadyExists), errors.Is(err, events.ErrConflict), errors.Is(err, domainerr.ErrAlreadyClaimed), errors.Is(err, domainerr.ErrWrongState):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "conflict", Message: "The object changed concurrently or is in a state that does not allow this; retry."}
	case errors.Is(err, domainerr.ErrInvalid):
		return badRequest("invalid_value", "", "%s", err.Error())
	case isUnavailable(err):
		// After every domain verdict: an outage is what is left.
		dep, _ := Unavailable(err)
		return unavailableError(dep)
	default:
		return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: "The server had an error while processing your request."}
	}
}

// failedError is what the client of a completion that failed gets: the
// status and error its outcome recorded.
func failedError(f *events.CompletionFailed) *apiError {
	return &apiError{Status: f.Status, Type: f.ErrorType, Code: f.ErrorCode, Message: f.ErrorMessage}
}

// Dependency names a service Tollgate cannot answer without.
type Dependency string

// The dependencies /readyz reports and Unavailable tells apart.
const (
	DependencyDatabase Dependency = "database"
	DependencyBus      Dependency = "bus"
	DependencyRedis    Dependency = "redis"
)

// RetryAfterUnavailable is the Retry-After of a 503 for an unreachable
// dependency: long enough not to hammer a restarting server, short enough
// that clients come back soon after it does.
const RetryAfterUnavailable = 2 * time.Second

// Unavailable is the one place that tells a dependency outage from any
// other error: it reports whether err says a dependency could not be
// reached (connection refused or reset, a dial or read timeout, a pool
// that could not open or hand out a connection in time, a server shutting
// down or starting up) and which one. Errors of the quota limiter
// (quota.ErrLimiter) are Redis's unless they carry a database error (the
// limiter seeds accounts from the read models); other transport errors
// reaching a handler are the database's, the only other dependency on a
// request's path (providers' errors are llm.Error, Stripe's
// stripe.ErrStripeUnavailable, both mapped before this is asked).
func Unavailable(err error) (Dependency, bool) {
	if err == nil {
		return "", false
	}
	db := databaseDown(err)
	switch {
	case errors.Is(err, quota.ErrLimiter) && !db:
		return DependencyRedis, true
	case db || transportDown(err):
		return DependencyDatabase, true
	}
	return "", false
}

func isUnavailable(err error) bool { _, ok := Unavailable(err); return ok }

// databaseDown recognises pgx's and PostgreSQL's own signs of an outage.
func databaseDown(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce), errors.Is(err, pgconn.ErrConnClosed), pgconn.Timeout(err):
		return true
	case errors.As(err, &pe):
		// 08: connection exception; 57P01-03: admin shutdown, crash
		// shutdown, cannot connect now (starting up, shutting down);
		// 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "53300"
	}
	return false
}

// transportDown recognises a connection that failed under a query.
func transportDown(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded)
}

// unavailableError is the 503 a client gets while dep is unreachable.
func unavailableError(dep Dependency) *apiError {
	ae := &apiError{Status: http.StatusServiceUnavailable, Type: "server_error",
		Header: map[string]string{"Retry-After": strconv.Itoa(int(RetryAfterUnavailable / time.Second))}}
	switch dep {
	case DependencyRedis:
		ae.Code, ae.Message = "quota_unavailable", "Admission control (the quota store, Redis) is unreachable; retry shortly."
	case DependencyBus:
		ae.Code, ae.Message = "bus_unavailable", "The event bus is unreachable; retry shortly."
	default:
		ae.Code, ae.Message = "database_unavailable", "The database is unreachable; retry shortly."
	}
	return ae
}

func writeError(w http.ResponseWriter, ae *apiError) {
	body := openaiwire.NewErrorBody(ae.Message, ae.Type, ae.Param, ae.Code)
	for k, v := range ae.Header {
		w.Header().Set(k, v)
	}
	writeJSON(w, ae.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do then
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
