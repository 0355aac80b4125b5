// Package llm calls LLM providers: an OpenAI-compatible HTTP client (Azure
// OpenAI included), the Anthropic Messages API translated to and from
// OpenAI's format, the built-in echo development provider, and a Router that
// maps a client-facing model to its deployments, retries, falls back between
// them and cools down failing ones. Everything is spoken in OpenAI's chat
// completions format: requests, responses, stream chunks and error bodies.
package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Usage is the token usage of one completion.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	// Estimated is true when Tollgate counted the tokens because the provider
	// reported none.
	Estimated bool
}

// Response is a successful chat completion.
type Response struct {
	// Body is the OpenAI chat.completion JSON object as the upstream returned it.
	Body  json.RawMessage
	Usage Usage
	// Provider is the provider name from config.
	Provider      string
	UpstreamModel string
	// Attempts are the failed attempts (retries, fallbacks, deployments
	// skipped while cooling down) that the Router went through before this
	// response, in order; empty when the first attempt answered.
	Attempts []*Error
}

// Stream is a streamed completion in OpenAI chat.completion.chunk form.
// It is not safe for concurrent use, except Usage, TimeToFirstToken and
// Attempts, which may be called from any goroutine at any time.
type Stream interface {
	// Next returns the next chunk (an OpenAI chat.completion.chunk JSON
	// object, without the SSE framing); io.EOF after the last. A failure
	// is an *Error (the stream broke: no fallback happens once a chunk was
	// returned), or ctx's error when the caller ended it.
	Next() (json.RawMessage, error)
	// Usage is the stream's usage so far: the provider's when it reported
	// it (Estimated false), otherwise counted by Tollgate from the prompt
	// and the text generated so far (Estimated true) — valid at any time,
	// also after an error or an early Close, so a disconnected client's
	// partial output can be billed.
	Usage() Usage
	// Provider is the provider name from config.
	Provider() string
	// UpstreamModel is the deployment's upstream model name.
	UpstreamModel() string
	// TimeToFirstToken is the delay to the first content chunk (0 before
	// it), measured from the start of Router.Stream, so failed attempts
	// before it count: it is what the client waited.
	TimeToFirstToken() time.Duration
	// Attempts are the failed attempts before this stream was established,
	// as in Response.Attempts. A failure after that is returned by Next
	// instead.
	Attempts() []*Error
	// Close ends the stream and cancels the upstream call. It is safe to
	// call more than once and after an error.
	Close() error
}

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

// OpenAI error types used by Tollgate.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeUpstream       = "upstream_error"
	TypeTimeout        = "timeout"
	TypeRateLimit      = "rate_limit_error"
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

// OpenAIBody returns the error as OpenAI's JSON error body,
// {"error":{"message","type","param","code"}}, for handlers to send.
func (e *Error) OpenAIBody() []byte {
	var code any
	if e.Code != "" {
		code = e.Code
	}
	b, err := json.Marshal(map[string]any{"error": map[string]any{
		"message": e.Message, "type": e.Type, "param": nil, "code": code,
	}})
	if err != nil {
		// Marshalling strings and nils cannot fail; keep a valid body anyway.
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}`)
	}
	return b
}

// invalidRequest builds a 400 error for a malformed client body.
func invalidRequest(provider, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: fmt.Sprintf(format, args...), Provider: provider}
}

// Provider runs chat completions against one upstream.
type Provider interface {
	// ChatCompletion sends body (an OpenAI chat completion request whose
	// "model" is already upstreamModel) and returns the complete response.
	// Failures are *Error, except when ctx itself ends, which returns ctx's error.
	ChatCompletion(ctx context.Context, upstreamModel string, body json.RawMessage) (*Response, error)
	// ChatCompletionStream is ChatCompletion streamed: it returns once the
	// upstream accepted the request (HTTP 2xx); chunks come from Next. ctx
	// bounds the whole stream. Failures are as for ChatCompletion.
	ChatCompletionStream(ctx context.Context, upstreamModel string, body json.RawMessage) (Stream, error)
}

// ClientWantsUsage reports whether an OpenAI chat completion request asked
// for the final usage chunk of a stream (stream_options.include_usage).
//
// Streams always end with a usage-only chunk (an empty "choices" and a
// "usage" object), because Tollgate asks every upstream for it to bill
// from the provider's own counts. A handler forwards that chunk only when
// ClientWantsUsage(clientBody); IsUsageChunk recognizes it.
func ClientWantsUsage(body json.RawMessage) bool {
	var req struct {
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	return json.Unmarshal(body, &req) == nil && req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}

// IsUsageChunk reports whether a stream chunk is the final usage-only chunk
// (no choices, a usage object), which a client that did not ask for usage
// must not receive.
func IsUsageChunk(chunk json.RawMessage) bool {
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	if json.Unmarshal(chunk, &c) != nil {
		return false
	}
	return len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}
