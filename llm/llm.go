// Package llm calls LLM providers: an OpenAI-compatible HTTP client (Azure
// OpenAI included), the Anthropic Messages API translated to and from
// OpenAI's format, the built-in echo development provider, and a Router that
// maps a client-facing model to its deployments, retries, falls back between
// them and cools down failing ones. Everything is spoken in OpenAI's chat
// completions format (llm/openaiwire declares it): requests, responses,
// stream chunks and error bodies.
//
// The files by responsibility: llm.go the Provider and Stream contracts,
// errors.go the *Error every failure is (and its classification for the
// executor), router*.go the Router (router_order.go deployment order,
// router_route.go retries, fallback and cooldown, router_limits.go the
// request each deployment gets, router_stream.go the routed stream),
// breaker.go the circuits, httpbase.go and stream.go what the HTTP
// providers share, openai.go, anthropic*.go (request, response and stream
// translation) and echo.go the providers, tokens.go Tollgate's own count.
package llm

import (
	"context"
	"encoding/json"
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
