package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// DefaultAnthropicMaxTokens is the max_tokens sent to Anthropic, which
// requires one, when neither the client nor the model config sets it.
const DefaultAnthropicMaxTokens = 4096

// Anthropic is a provider for the Anthropic Messages API. It takes and
// returns OpenAI's chat completions format, translating both ways.
type Anthropic struct {
	httpBase
	url     string
	version string
	headers providerHeaders
}

// NewAnthropic returns a provider for p (kind anthropic) that authenticates
// with apiKey. client nil = NewHTTPClient().
func NewAnthropic(p config.Provider, apiKey string, client *http.Client) *Anthropic {
	base := p.BaseURL
	if base == "" {
		base = config.DefaultAnthropicBaseURL
	}
	version := p.APIVersion
	if version == "" {
		version = config.DefaultAnthropicVersion
	}
	return &Anthropic{
		httpBase: newHTTPBase(p, apiKey, client),
		url:      strings.TrimRight(base, "/") + "/v1/messages",
		version:  version,
	}
}

// requiresMaxTokens tells the Router to fill max_tokens from the model's
// max_output_tokens when the client sets none.
func (a *Anthropic) requiresMaxTokens() bool { return true }

// authHeader is the key's header and the API version's.
func (a *Anthropic) authHeader() http.Header {
	h := http.Header{}
	if a.apiKey != "" {
		h.Set("x-api-key", a.apiKey)
	}
	h.Set("anthropic-version", a.version)
	return h
}

// ChatCompletion implements Provider.
func (a *Anthropic) ChatCompletion(ctx context.Context, upstreamModel string, body json.RawMessage) (*Response, error) {
	req, err := a.translateRequest(upstreamModel, body)
	if err != nil {
		return nil, err
	}
	sent, err := encodeJSON(req)
	if err != nil {
		return nil, fmt.Errorf("llm provider %q: %w", a.name, err)
	}
	parent := ctx
	ctx, _, stop := a.attempt(ctx)
	defer stop()
	h, _ := a.headers.get(a.authHeader)
	resp, err := a.post(parent, ctx, a.url, h, sent, anthropicErrorBody)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := a.readAll(parent, ctx, resp)
	if err != nil {
		return nil, err
	}
	return a.translateResponse(upstreamModel, raw, resp.StatusCode)
}

// ChatCompletionStream implements Provider: Anthropic's stream events become
// OpenAI chat.completion.chunk objects, ending with a usage-only chunk.
func (a *Anthropic) ChatCompletionStream(ctx context.Context, upstreamModel string, body json.RawMessage) (Stream, error) {
	req, err := a.translateRequest(upstreamModel, body)
	if err != nil {
		return nil, err
	}
	req.Stream = true
	sent, err := encodeJSON(req)
	if err != nil {
		return nil, fmt.Errorf("llm provider %q: %w", a.name, err)
	}
	_, h := a.headers.get(a.authHeader)
	return a.openStream(ctx, a.url, h, sent, body, anthropicErrorBody, upstreamModel,
		&anthropicDecoder{base: &a.httpBase, created: a.now().Unix(), model: upstreamModel, blocks: map[int]int{}})
}

// anthropicErrorBody parses {"type":"error","error":{"type","message"}}.
func anthropicErrorBody(raw []byte) (msg, typ, code string) {
	var body struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &body)
	typ = body.Error.Type
	// Anthropic's error types mostly match OpenAI's; the client-error ones
	// that do not are reported as invalid requests with their type as code.
	switch typ {
	case "invalid_request_error", "":
		return body.Error.Message, typ, ""
	default:
		return body.Error.Message, openaiwire.TypeInvalidRequest, typ
	}
}
