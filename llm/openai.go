package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// MaxResponseBytes caps how much of an upstream response body is read, so a
// misbehaving provider cannot exhaust memory.
const MaxResponseBytes = 16 << 20

// maxErrorMessage caps a provider error message passed on to clients.
const maxErrorMessage = 2000

// OpenAI is a provider for any server speaking OpenAI's chat completions API
// (OpenAI itself, Azure OpenAI, vLLM, Ollama, llama.cpp, LM Studio, Groq...).
type OpenAI struct {
	httpBase
	base       string
	apiVersion string // non-empty = Azure OpenAI
	headers    providerHeaders
}

// NewOpenAI returns a provider for p that authenticates with apiKey (empty:
// no Authorization header, for local servers). client nil = NewHTTPClient().
// A provider with an api_version is Azure OpenAI: see config.Provider.APIVersion.
func NewOpenAI(p config.Provider, apiKey string, client *http.Client) *OpenAI {
	return &OpenAI{
		httpBase:   newHTTPBase(p, apiKey, client),
		base:       strings.TrimRight(p.BaseURL, "/"),
		apiVersion: p.APIVersion,
	}
}

// NewHTTPClient returns a client with transport-level timeouts for dialing
// and TLS. It has no overall timeout: a completion may legitimately take
// minutes, so each request is bounded by its provider's timeout via context.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

// endpoint returns the chat completions URL and the headers of a call,
// for a JSON answer or a stream (shared: not to be modified).
func (o *OpenAI) endpoint(upstreamModel string) (u string, jsonHeader, streamHeader http.Header) {
	jsonHeader, streamHeader = o.headers.get(o.authHeader)
	if o.apiVersion != "" {
		// Azure: the deployment is in the path.
		return o.base + "/openai/deployments/" + url.PathEscape(upstreamModel) + "/chat/completions?api-version=" + url.QueryEscape(o.apiVersion), jsonHeader, streamHeader
	}
	return o.base + "/chat/completions", jsonHeader, streamHeader
}

// authHeader is the key's header: Azure's api-key, or OpenAI's bearer token.
func (o *OpenAI) authHeader() http.Header {
	h := http.Header{}
	switch {
	case o.apiKey == "":
	case o.apiVersion != "":
		h.Set("api-key", o.apiKey)
	default:
		h.Set("Authorization", "Bearer "+o.apiKey)
	}
	return h
}

// ChatCompletion implements Provider.
func (o *OpenAI) ChatCompletion(ctx context.Context, upstreamModel string, body json.RawMessage) (*Response, error) {
	parent := ctx
	ctx, _, stop := o.attempt(ctx)
	defer stop()
	u, h, _ := o.endpoint(upstreamModel)
	resp, err := o.post(parent, ctx, u, h, body, openAIErrorBody)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := o.readAll(parent, ctx, resp)
	if err != nil {
		return nil, err
	}
	return o.parseSuccess(upstreamModel, body, raw, resp.StatusCode)
}

// ChatCompletionStream implements Provider. It always asks the upstream for
// stream_options.include_usage, so the stream ends with the provider's usage
// (see openaiwire.WantsUsage); the chunks are passed on exactly as they came.
func (o *OpenAI) ChatCompletionStream(ctx context.Context, upstreamModel string, body json.RawMessage) (Stream, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil || req == nil {
		return nil, invalidRequest(o.name, "request body must be a JSON object")
	}
	opts := map[string]json.RawMessage{}
	if raw, ok := req["stream_options"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &opts); err != nil {
			return nil, invalidRequest(o.name, "stream_options must be an object")
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	req["stream_options"], _ = json.Marshal(opts)
	req["stream"] = json.RawMessage("true")
	sent, err := encodeJSON(req)
	if err != nil {
		return nil, fmt.Errorf("llm provider %q: %w", o.name, err)
	}
	u, _, h := o.endpoint(upstreamModel)
	return o.openStream(ctx, u, h, sent, sent, openAIErrorBody, upstreamModel, &openAIDecoder{base: &o.httpBase})
}

// openAIDecoder passes OpenAI's chunks through and recognizes the end
// marker and in-stream errors.
type openAIDecoder struct {
	base     *httpBase
	finished bool
}

func (d *openAIDecoder) decode(ev sseEvent) ([]json.RawMessage, bool, error) {
	data := bytes.TrimSpace(ev.data)
	if string(data) == "[DONE]" {
		return nil, true, nil
	}
	var probe struct {
		Choices []struct {
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		openaiwire.ProviderError
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, false, d.base.invalid(http.StatusOK, "stream chunk is not JSON")
	}
	if probe.Error != nil {
		// An error after the stream started (e.g. the server overloaded
		// mid-generation): the stream is over.
		return nil, false, &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: d.base.name, Retryable: true,
			Class: ClassServerError, Code: openaiwire.CodeText(probe.Error.Code), UpstreamStatus: http.StatusOK,
			Message: fmt.Sprintf("provider %q failed during the stream: %s", d.base.name, d.base.scrub(probe.Error.Message))}
	}
	for _, c := range probe.Choices {
		if c.FinishReason != nil && *c.FinishReason != "" {
			d.finished = true
		}
	}
	chunk := make(json.RawMessage, len(data))
	copy(chunk, data)
	return []json.RawMessage{chunk}, false, nil
}

func (d *openAIDecoder) eof() error {
	if d.finished {
		return nil // some servers omit [DONE]; the choice had finished
	}
	return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: d.base.name, Retryable: true, Class: ClassConnection,
		Message: fmt.Sprintf("provider %q ended the stream before it finished", d.base.name)}
}

func (d *openAIDecoder) partial() (int64, int64, bool) { return 0, 0, false }

// parseSuccess validates a 2xx body and extracts its usage.
func (o *OpenAI) parseSuccess(upstreamModel string, sent json.RawMessage, raw []byte, status int) (*Response, error) {
	bad := func(why string) error {
		return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: o.name, Retryable: true, Class: ClassServerError,
			UpstreamStatus: status, Message: fmt.Sprintf("provider %q returned an invalid chat completion: %s", o.name, why)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, bad("not a JSON object")
	}
	var view openaiwire.ResponseView
	if c, ok := obj["choices"]; !ok || json.Unmarshal(c, &view.Choices) != nil {
		return nil, bad(`missing "choices" array`)
	}
	for _, c := range view.Choices {
		for _, tc := range c.Message.ToolCalls {
			if _, _, err := tc.Function.Text(); err != nil {
				return nil, bad(`missing "choices" array`)
			}
		}
	}
	if u, ok := obj["usage"]; ok {
		if err := json.Unmarshal(u, &view.Usage); err != nil {
			return nil, bad(`"usage" is not an object of token counts`)
		}
	}
	resp := &Response{Body: raw, Provider: o.name, UpstreamModel: upstreamModel}
	if p, c, ok := view.Usage.Counts(); ok {
		if p < 0 || c < 0 {
			return nil, bad("negative token counts")
		}
		resp.Usage = Usage{PromptTokens: p, CompletionTokens: c}
		return resp, nil
	}
	// No usage (some OpenAI-compatible servers omit it): count it ourselves,
	// with the same counter as the echo provider, and say it is an estimate.
	prompt, err := CountPromptTokens(sent)
	if err != nil {
		prompt = 0 // the body was valid JSON when sent; keep the count honest at zero rather than fail a paid answer
	}
	var completion int64
	for _, c := range view.Choices {
		text, _, _ := openaiwire.ContentText(c.Message.Content)
		calls, _ := toolCallTokens(c.Message.ToolCalls) // checked above
		completion += CountTokens(text) + calls
	}
	resp.Usage = Usage{PromptTokens: prompt, CompletionTokens: completion, Estimated: true}
	return resp, nil
}
