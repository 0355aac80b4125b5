package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
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
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// toAPIError maps every error a handler can meet to what the client sees.
// It is the one place where domain outcomes become HTTP statuses.
func toAPIError(err error) *apiError {
	var ae *apiError
	var le *llm.Error
	var ve *commands.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, billing.ErrWebhookSignature):
		return badRequest("invalid_signature", "", "The Stripe-Signature header does not verify with STRIPE_WEBHOOK_SECRET (or is older than the tolerance).")
	case errors.Is(err, billing.ErrWebhookPayload):
		return badRequest("invalid_payload", "", "The body is not a Stripe event Tollgate can read.")
	case errors.Is(err, billing.ErrBillingNotConfigured):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "billing_not_configured", Message: "Billing is not configured on this server."}
	case errors.Is(err, billing.ErrStripeUnavailable):
		return &apiError{Status: http.StatusBadGateway, Type: "server_error", Code: "billing_provider_error", Message: "Stripe could not be reached or refused the request; retry later."}
	case errors.Is(err, billing.ErrAlreadySubscribed):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "already_subscribed", Message: "This account already has a subscription; change plans in the billing portal (POST /v1/billing/portal)."}
	case errors.Is(err, commands.ErrNoBillingCustomer):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "no_billing_customer", Message: "This account has no billing customer yet; subscribe first (POST /v1/billing/checkout)."}
	case errors.Is(err, quota.ErrLimiter):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "quota_unavailable", Message: "Admission control is unavailable; retry shortly."}
	case errors.Is(err, commands.ErrRevoked):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "api_key_revoked", Message: "This API key is revoked."}
	case errors.As(err, &le):
		return &apiError{Status: le.Status, Type: le.Type, Code: le.Code, Message: le.Message}
	case errors.As(err, &ve):
		return badRequest("invalid_value", ve.Field, "%s", ve.Error())
	case errors.Is(err, commands.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Message: "No such object."}
	case errors.Is(err, commands.ErrAlreadyExists), errors.Is(err, events.ErrConflict), errors.Is(err, commands.ErrAlreadyClaimed), errors.Is(err, commands.ErrWrongState):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "conflict", Message: "The object changed concurrently or is in a state that does not allow this; retry."}
	case errors.Is(err, commands.ErrInvalid):
		return badRequest("invalid_value", "", "%s", err.Error())
	default:
		return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: "The server had an error while processing your request."}
	}
}

func writeError(w http.ResponseWriter, ae *apiError) {
	var body errorBody
	body.Error.Message, body.Error.Type = ae.Message, ae.Type
	if ae.Code != "" {
		body.Error.Code = &ae.Code
	}
	if ae.Param != "" {
		body.Error.Param = &ae.Param
	}
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
