package llm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// Attempt classes, in Error.Class: what kind of failure an attempt was.
const (
	ClassRateLimited  = "rate_limited"  // the provider answered 429
	ClassServerError  = "server_error"  // 5xx, or a 2xx that is not a valid completion
	ClassTimeout      = "timeout"       // no (complete) answer within the attempt timeout or the deadline
	ClassConnection   = "connection"    // unreachable, reset, or the stream broke off
	ClassProviderAuth = "provider_auth" // the provider rejected Tollgate's credentials (401/403)
	ClassClientError  = "client_error"  // the request itself was refused (400, 404, 413, 422...)
	ClassCoolingDown  = "cooling_down"  // the deployment was skipped: its circuit is open
)

// Error is an upstream or transport failure, shaped like OpenAI's error body.
type Error struct {
	// Status is the HTTP status to return to the client: the upstream's for
	// client errors, 502 for upstream 5xx, bad bodies and rejected provider
	// credentials, 504 for timeouts.
	Status int
	// Type is the OpenAI error type, e.g. "invalid_request_error", "upstream_error", "timeout".
	Type string
	Code string
	// Param is the request parameter the error is about, if any.
	Param string
	// Message is safe to show the client: the provider's message for client
	// errors, never the API key.
	Message  string
	Provider string
	// Retryable is true for 429, 5xx, timeouts and connection errors: another
	// deployment (or a later try) may succeed.
	Retryable bool
	// UpstreamStatus is the HTTP status the provider returned (0 when no
	// response arrived), for logs and events.
	UpstreamStatus int

	// UpstreamModel is the deployment's upstream model (with Provider, the
	// deployment that failed); set by the Router.
	UpstreamModel string
	// Class is one of the Class constants; set by the Router when a
	// provider left it empty.
	Class string
	// LatencyMS is how long the attempt took; set by the Router.
	LatencyMS int64
	// RetryAfter is the provider's Retry-After (0 = none): the Router does
	// not call this deployment again before it has passed.
	RetryAfter time.Duration
}

// Deployment names the deployment that failed, "provider/upstream-model".
func (e *Error) Deployment() string {
	if e.UpstreamModel == "" {
		return e.Provider
	}
	return e.Provider + "/" + e.UpstreamModel
}

// routeError is what Router.Complete and Router.Stream return on failure:
// the error the client should see, plus every failed attempt for the
// executor to record.
type routeError struct {
	err      error
	attempts []*Error
}

func (e *routeError) Error() string { return e.err.Error() }
func (e *routeError) Unwrap() error { return e.err }

// AttemptsOf returns every failed attempt of a request that Router.Complete
// or Router.Stream failed with err, in order (the last is usually the
// *Error that err also is), or nil for an error that did not come from them.
// It works for every failure, also when the caller's context ended.
func AttemptsOf(err error) []*Error {
	var re *routeError
	if errors.As(err, &re) {
		return re.attempts
	}
	return nil
}

// Error implements error.
func (e *Error) Error() string {
	s := fmt.Sprintf("llm provider %q: %s (HTTP %d", e.Provider, e.Type, e.Status)
	if e.UpstreamStatus != 0 && e.UpstreamStatus != e.Status {
		s += fmt.Sprintf(", upstream %d", e.UpstreamStatus)
	}
	s += ")"
	if e.Code != "" {
		s += " [" + e.Code + "]"
	}
	return s + ": " + e.Message
}

// OpenAIBody returns the error as OpenAI's JSON error body
// (openaiwire.ErrorBody), its keys in sorted order as it has always been
// written, for fake upstreams and logs.
func (e *Error) OpenAIBody() []byte {
	var sorted map[string]map[string]any
	b, err := json.Marshal(openaiwire.NewErrorBody(e.Message, e.Type, "", e.Code))
	if err == nil {
		err = json.Unmarshal(b, &sorted)
	}
	if err == nil {
		b, err = json.Marshal(sorted)
	}
	if err != nil {
		// Marshalling strings and nils cannot fail; keep a valid body anyway.
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}`)
	}
	return b
}

// invalidRequest builds a 400 error for a malformed client body.
func invalidRequest(provider, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: openaiwire.TypeInvalidRequest, Message: fmt.Sprintf(format, args...), Provider: provider}
}

// ModelNotFound is the client's error for a model Tollgate does not serve
// (or not to this caller), at the edge.
func ModelNotFound(model string) *Error {
	return modelNotFound(model, fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model))
}

// ModelRemoved is the outcome of a stored request whose model was taken
// out of the config before it ran.
func ModelRemoved(model string) *Error {
	return modelNotFound(model, fmt.Sprintf("The model `%s` is no longer configured.", model))
}

func modelNotFound(model, message string) *Error {
	return &Error{Status: http.StatusNotFound, Type: openaiwire.TypeInvalidRequest, Code: "model_not_found", Param: "model", Message: message}
}

// BadAnswer is the error for a provider's answer that Tollgate cannot use
// (it cannot be read or priced): 502, as if the provider had failed.
func BadAnswer(provider, message string) *Error {
	return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: provider, Message: message}
}

// ServiceUnavailable is a 503 server_error: Tollgate itself could not
// finish the request (code says why), though the provider may have.
func ServiceUnavailable(code, message string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: openaiwire.TypeServer, Code: code, Message: message}
}

// StatusClientClosed is the de facto status (nginx's 499) of a request
// whose client went away before the provider answered.
const StatusClientClosed = 499

// Failure classifies the error a completion failed with as the OpenAI
// error its client gets and its outcome records: an *Error as it is (an
// upstream_error, 502, where it leaves the type or status unset); a client
// that went away (callerGone) 499; anything else a provider that could not
// be reached, 502. The result is a copy: err is not changed.
func Failure(err error, callerGone bool) Error {
	var le *Error
	var f Error
	switch {
	case errors.As(err, &le):
		f = *le
	case callerGone:
		f = Error{Status: StatusClientClosed, Type: "client_closed_request", Code: "client_closed",
			Message: "The client closed the request before the provider answered."}
	default:
		f = Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Message: "The provider could not be reached."}
	}
	if f.Type == "" {
		f.Type = openaiwire.TypeUpstream
	}
	if f.Status == 0 {
		f.Status = http.StatusBadGateway
	}
	return f
}
