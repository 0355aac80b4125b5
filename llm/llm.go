// Package llm calls LLM providers: an OpenAI-compatible HTTP client, the
// built-in echo development provider, and a Router that maps a client-facing
// model to its deployments and falls back between them.
package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
	// Attempts are the retryable failures of earlier deployments that the
	// Router fell back from before this response, in order (empty when the
	// first deployment answered).
	Attempts []*Error
}

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
}
