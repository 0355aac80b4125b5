package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/config"
)

// MaxResponseBytes caps how much of an upstream response body is read, so a
// misbehaving provider cannot exhaust memory.
const MaxResponseBytes = 16 << 20

// maxErrorMessage caps a provider error message passed on to clients.
const maxErrorMessage = 2000

// OpenAI is a provider for any server speaking OpenAI's chat completions API
// (OpenAI itself, vLLM, Ollama, llama.cpp, LM Studio...).
type OpenAI struct {
	name    string
	url     string
	apiKey  string
	timeout time.Duration
	client  *http.Client
}

// NewOpenAI returns a provider for p that authenticates with apiKey (empty:
// no Authorization header, for local servers). client nil = NewHTTPClient().
func NewOpenAI(p config.Provider, apiKey string, client *http.Client) *OpenAI {
	if client == nil {
		client = NewHTTPClient()
	}
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = config.DefaultProviderTimeout
	}
	return &OpenAI{
		name:    p.Name,
		url:     strings.TrimRight(p.BaseURL, "/") + "/chat/completions",
		apiKey:  apiKey,
		timeout: timeout,
		client:  client,
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

// ChatCompletion implements Provider.
func (o *OpenAI) ChatCompletion(ctx context.Context, upstreamModel string, body json.RawMessage) (*Response, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Provider: o.name,
			Message: fmt.Sprintf("provider %q is misconfigured: %v", o.name, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if o.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.apiKey)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, o.transportError(parent, ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, o.transportError(parent, ctx, err)
	}
	if len(raw) > MaxResponseBytes {
		return nil, &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Provider: o.name, Retryable: true,
			UpstreamStatus: resp.StatusCode, Message: fmt.Sprintf("provider %q returned a response larger than %d bytes", o.name, MaxResponseBytes)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, o.statusError(resp, raw)
	}
	return o.parseSuccess(upstreamModel, body, raw, resp.StatusCode)
}

// transportError maps a failure to get or read a response.
// parent is the caller's context, ctx the one bounded by the provider timeout.
func (o *OpenAI) transportError(parent, ctx context.Context, err error) error {
	if parent.Err() != nil {
		// The caller gave up (client disconnected, shutdown, its own
		// deadline): not a provider failure, and no fallback should run.
		return fmt.Errorf("llm provider %q: %w", o.name, context.Cause(parent))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Status: http.StatusGatewayTimeout, Type: TypeTimeout, Provider: o.name, Retryable: true,
			Message: fmt.Sprintf("provider %q did not answer in time", o.name)}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Status: http.StatusGatewayTimeout, Type: TypeTimeout, Provider: o.name, Retryable: true,
			Message: fmt.Sprintf("provider %q did not answer in time", o.name)}
	}
	// Connection refused, reset, DNS failure...: the provider is unreachable.
	// The Go error is not shown to clients: it names internal hosts.
	return &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Provider: o.name, Retryable: true,
		Message: fmt.Sprintf("provider %q is unreachable", o.name)}
}

// statusError maps a non-2xx upstream response to an *Error.
func (o *OpenAI) statusError(resp *http.Response, raw []byte) *Error {
	status := resp.StatusCode
	var body struct {
		Error struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &body) // a non-JSON error body still maps by status
	msg := o.scrub(body.Error.Message)
	code := decodeCode(body.Error.Code)
	e := &Error{Provider: o.name, UpstreamStatus: status, Code: code}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// The client's request was fine: it is Tollgate's key that the
		// provider rejected. Say so without echoing the provider's message,
		// which may quote part of the key.
		e.Status, e.Type, e.Code = http.StatusBadGateway, TypeUpstream, ""
		e.Message = fmt.Sprintf("provider %q rejected Tollgate's credentials (HTTP %d); the operator must fix the provider API key", o.name, status)
	case status == http.StatusTooManyRequests:
		// Provider rate limits are on Tollgate's account; their messages name
		// its organization, so they are not passed on.
		e.Status, e.Type, e.Retryable = http.StatusTooManyRequests, TypeRateLimit, true
		e.Message = fmt.Sprintf("provider %q is rate limiting requests; try again later", o.name)
	case status == http.StatusRequestTimeout:
		e.Status, e.Type, e.Retryable = http.StatusGatewayTimeout, TypeTimeout, true
		e.Message = fmt.Sprintf("provider %q timed out (HTTP 408)", o.name)
	case status >= 500:
		e.Status, e.Type, e.Retryable = http.StatusBadGateway, TypeUpstream, true
		e.Message = fmt.Sprintf("provider %q failed (HTTP %d)", o.name, status)
		if msg != "" {
			e.Message += ": " + msg
		}
	case status >= 400:
		// A client error: the provider's own words are the most useful answer.
		e.Status, e.Type = status, body.Error.Type
		if e.Type == "" {
			e.Type = TypeInvalidRequest
		}
		e.Message = msg
		if e.Message == "" {
			e.Message = fmt.Sprintf("provider %q rejected the request (HTTP %d %s)", o.name, status, http.StatusText(status))
		}
	default:
		// 1xx/3xx: the client does not follow redirects from POSTs to other hosts
		// silently, so this is a misconfigured base_url.
		e.Status, e.Type = http.StatusBadGateway, TypeUpstream
		e.Message = fmt.Sprintf("provider %q answered with unexpected HTTP %d", o.name, status)
	}
	return e
}

// parseSuccess validates a 2xx body and extracts its usage.
func (o *OpenAI) parseSuccess(upstreamModel string, sent json.RawMessage, raw []byte, status int) (*Response, error) {
	bad := func(why string) error {
		return &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Provider: o.name, Retryable: true,
			UpstreamStatus: status, Message: fmt.Sprintf("provider %q returned an invalid chat completion: %s", o.name, why)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, bad("not a JSON object")
	}
	var choices []struct {
		Message chatMessage `json:"message"`
	}
	if c, ok := obj["choices"]; !ok || json.Unmarshal(c, &choices) != nil {
		return nil, bad(`missing "choices" array`)
	}
	var usage *struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
	}
	if u, ok := obj["usage"]; ok {
		if err := json.Unmarshal(u, &usage); err != nil {
			return nil, bad(`"usage" is not an object of token counts`)
		}
	}
	resp := &Response{Body: raw, Provider: o.name, UpstreamModel: upstreamModel}
	if usage != nil && usage.PromptTokens != nil && usage.CompletionTokens != nil {
		if *usage.PromptTokens < 0 || *usage.CompletionTokens < 0 {
			return nil, bad("negative token counts")
		}
		resp.Usage = Usage{PromptTokens: *usage.PromptTokens, CompletionTokens: *usage.CompletionTokens}
		return resp, nil
	}
	// No usage (some OpenAI-compatible servers omit it): count it ourselves,
	// with the same counter as the echo provider, and say it is an estimate.
	prompt, err := CountPromptTokens(sent)
	if err != nil {
		prompt = 0 // the body was valid JSON when sent; keep the count honest at zero rather than fail a paid answer
	}
	var completion int64
	for _, c := range choices {
		text, _, _ := contentText(c.Message.Content)
		completion += CountTokens(text)
		for _, tc := range c.Message.ToolCalls {
			completion += CountTokens(tc.Function.Name) + CountTokens(tc.Function.Arguments)
		}
	}
	resp.Usage = Usage{PromptTokens: prompt, CompletionTokens: completion, Estimated: true}
	return resp, nil
}

// scrub makes a provider message safe to show: never the API key, bounded length, valid UTF-8.
func (o *OpenAI) scrub(msg string) string {
	if o.apiKey != "" {
		msg = strings.ReplaceAll(msg, o.apiKey, "[redacted]")
	}
	msg = strings.ToValidUTF8(msg, "")
	if len(msg) > maxErrorMessage {
		cut := maxErrorMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// decodeCode reads OpenAI's error code, which is a string, a number or null.
func decodeCode(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}
