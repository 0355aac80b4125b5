package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate/tollgate/config"
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
}

// NewAnthropic returns a provider for p (kind anthropic) that authenticates
// with apiKey. client nil = NewHTTPClient().
func NewAnthropic(p config.Provider, apiKey string, client *http.Client) *Anthropic {
	if client == nil {
		client = NewHTTPClient()
	}
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = config.DefaultProviderTimeout
	}
	base := p.BaseURL
	if base == "" {
		base = config.DefaultAnthropicBaseURL
	}
	version := p.APIVersion
	if version == "" {
		version = config.DefaultAnthropicVersion
	}
	return &Anthropic{
		httpBase: httpBase{name: p.Name, apiKey: apiKey, timeout: timeout, client: client, now: time.Now},
		url:      strings.TrimRight(base, "/") + "/v1/messages",
		version:  version,
	}
}

// requiresMaxTokens tells the Router to fill max_tokens from the model's
// max_output_tokens when the client sets none.
func (a *Anthropic) requiresMaxTokens() bool { return true }

func (a *Anthropic) headers() http.Header {
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
	h := a.headers()
	h.Set("Accept", "application/json")
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
	return a.openStream(ctx, a.url, a.headers(), sent, body, anthropicErrorBody, upstreamModel,
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
		return body.Error.Message, TypeInvalidRequest, typ
	}
}

// The OpenAI request fields the translation reads.
type oaRequest struct {
	Messages            []oaMessage     `json:"messages"`
	Tools               []oaTool        `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Stop                json.RawMessage `json:"stop"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	N                   *int            `json:"n"`
	Logprobs            *bool           `json:"logprobs"`
	ResponseFormat      *struct {
		Type string `json:"type"`
	} `json:"response_format"`
	User string `json:"user"`
}

type oaMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []oaToolCall    `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

type oaToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type oaTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// The Anthropic Messages request.
type anRequest struct {
	Model         string        `json:"model"`
	System        string        `json:"system,omitempty"`
	Messages      []anMessage   `json:"messages"`
	MaxTokens     int64         `json:"max_tokens"`
	StopSequences []string      `json:"stop_sequences,omitempty"`
	Temperature   *float64      `json:"temperature,omitempty"`
	TopP          *float64      `json:"top_p,omitempty"`
	Tools         []anTool      `json:"tools,omitempty"`
	ToolChoice    *anToolChoice `json:"tool_choice,omitempty"`
	Metadata      *anMetadata   `json:"metadata,omitempty"`
	Stream        bool          `json:"stream,omitempty"`
}

type anMetadata struct {
	UserID string `json:"user_id"`
}

type anMessage struct {
	Role    string    `json:"role"`
	Content []anBlock `json:"content"`
}

type anBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	Source    *anSource       `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   *string         `json:"content,omitempty"`
}

type anSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type anTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// translateRequest turns an OpenAI chat completion request into a Messages
// request. What Anthropic cannot do (n > 1, logprobs, JSON mode) is
// refused with a 400 rather than silently ignored.
func (a *Anthropic) translateRequest(upstreamModel string, body json.RawMessage) (*anRequest, error) {
	var in oaRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, invalidRequest(a.name, "request body is not a valid chat completion request: %v", err)
	}
	bad := func(format string, args ...any) error { return invalidRequest(a.name, format, args...) }
	if in.N != nil && *in.N != 1 {
		return nil, bad("n: the model's provider (Anthropic) returns one choice; n must be 1")
	}
	if in.Logprobs != nil && *in.Logprobs {
		return nil, bad("logprobs: not supported by the model's provider (Anthropic)")
	}
	if in.ResponseFormat != nil && in.ResponseFormat.Type != "" && in.ResponseFormat.Type != "text" {
		return nil, bad("response_format %q: not supported by the model's provider (Anthropic)", in.ResponseFormat.Type)
	}
	out := &anRequest{Model: upstreamModel, MaxTokens: DefaultAnthropicMaxTokens, Temperature: in.Temperature, TopP: in.TopP}
	switch {
	case in.MaxCompletionTokens != nil:
		out.MaxTokens = *in.MaxCompletionTokens
	case in.MaxTokens != nil:
		out.MaxTokens = *in.MaxTokens
	}
	if out.MaxTokens < 1 {
		return nil, bad("max_tokens must be at least 1, got %d", out.MaxTokens)
	}
	if in.User != "" {
		out.Metadata = &anMetadata{UserID: in.User}
	}
	if len(in.Stop) > 0 && string(in.Stop) != "null" {
		var one string
		if json.Unmarshal(in.Stop, &one) == nil {
			out.StopSequences = []string{one}
		} else if json.Unmarshal(in.Stop, &out.StopSequences) != nil {
			return nil, bad("stop must be a string or an array of strings")
		}
	}

	var system []string
	for i, m := range in.Messages {
		switch m.Role {
		case "system", "developer":
			text, _, err := contentText(m.Content)
			if err != nil {
				return nil, bad("messages[%d]: %v", i, err)
			}
			system = append(system, text)
		case "user":
			blocks, err := userBlocks(m.Content)
			if err != nil {
				return nil, bad("messages[%d]: %v", i, err)
			}
			out.Messages = appendMessage(out.Messages, "user", blocks)
		case "assistant":
			text, _, err := contentText(m.Content)
			if err != nil {
				return nil, bad("messages[%d]: %v", i, err)
			}
			var blocks []anBlock
			if text != "" {
				blocks = append(blocks, anBlock{Type: "text", Text: text})
			}
			for j, tc := range m.ToolCalls {
				input := json.RawMessage(tc.Function.Arguments)
				if strings.TrimSpace(tc.Function.Arguments) == "" {
					input = json.RawMessage("{}")
				}
				var obj map[string]json.RawMessage
				if err := json.Unmarshal(input, &obj); err != nil || obj == nil {
					return nil, bad("messages[%d].tool_calls[%d].function.arguments must be a JSON object", i, j)
				}
				blocks = append(blocks, anBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
			}
			if len(blocks) == 0 {
				continue // an empty assistant turn carries nothing Anthropic accepts
			}
			out.Messages = appendMessage(out.Messages, "assistant", blocks)
		case "tool":
			if m.ToolCallID == "" {
				return nil, bad("messages[%d].tool_call_id is required for a tool message", i)
			}
			text, _, err := contentText(m.Content)
			if err != nil {
				return nil, bad("messages[%d]: %v", i, err)
			}
			// Tool results go back in a user turn, several results in one.
			out.Messages = appendMessage(out.Messages, "user", []anBlock{{Type: "tool_result", ToolUseID: m.ToolCallID, Content: &text}})
		default:
			return nil, bad("messages[%d].role %q is not supported by the model's provider (Anthropic)", i, m.Role)
		}
	}
	out.System = strings.Join(system, "\n\n")
	if len(out.Messages) == 0 {
		return nil, bad("messages: at least one user message is required")
	}

	for i, t := range in.Tools {
		if t.Type != "function" && t.Type != "" {
			return nil, bad("tools[%d].type %q is not supported by the model's provider (Anthropic)", i, t.Type)
		}
		schema := t.Function.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out.Tools = append(out.Tools, anTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
	}
	if len(in.ToolChoice) > 0 && string(in.ToolChoice) != "null" {
		var s string
		var obj struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(in.ToolChoice, &s) == nil:
			switch s {
			case "auto":
				out.ToolChoice = &anToolChoice{Type: "auto"}
			case "none":
				out.ToolChoice = &anToolChoice{Type: "none"}
			case "required":
				out.ToolChoice = &anToolChoice{Type: "any"}
			default:
				return nil, bad("tool_choice %q: want auto, none, required or a function", s)
			}
		case json.Unmarshal(in.ToolChoice, &obj) == nil && obj.Function.Name != "":
			out.ToolChoice = &anToolChoice{Type: "tool", Name: obj.Function.Name}
		default:
			return nil, bad("tool_choice must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":...}}")
		}
	}
	if in.ParallelToolCalls != nil && !*in.ParallelToolCalls && len(out.Tools) > 0 {
		if out.ToolChoice == nil {
			out.ToolChoice = &anToolChoice{Type: "auto"}
		}
		if out.ToolChoice.Type != "none" {
			out.ToolChoice.DisableParallelToolUse = true
		}
	}
	return out, nil
}

// appendMessage adds blocks as a turn of role, merged into the previous
// turn when it has the same role (Anthropic expects alternating turns).
func appendMessage(msgs []anMessage, role string, blocks []anBlock) []anMessage {
	if n := len(msgs); n > 0 && msgs[n-1].Role == role {
		msgs[n-1].Content = append(msgs[n-1].Content, blocks...)
		return msgs
	}
	return append(msgs, anMessage{Role: role, Content: blocks})
}

// userBlocks translates a user message's content: text and images.
func userBlocks(raw json.RawMessage) ([]anBlock, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []anBlock{{Type: "text", Text: s}}, nil
	}
	var parts []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, fmt.Errorf("content is neither a string nor an array of parts: %w", err)
	}
	var blocks []anBlock
	for i, p := range parts {
		switch p.Type {
		case "text":
			if p.Text != "" {
				blocks = append(blocks, anBlock{Type: "text", Text: p.Text})
			}
		case "image_url":
			u := p.ImageURL.URL
			if rest, ok := strings.CutPrefix(u, "data:"); ok {
				meta, data, ok := strings.Cut(rest, ",")
				media, isB64 := strings.CutSuffix(meta, ";base64")
				if !ok || !isB64 {
					return nil, fmt.Errorf("content[%d]: an image data URL must be base64 (data:image/png;base64,...)", i)
				}
				blocks = append(blocks, anBlock{Type: "image", Source: &anSource{Type: "base64", MediaType: media, Data: data}})
			} else {
				blocks = append(blocks, anBlock{Type: "image", Source: &anSource{Type: "url", URL: u}})
			}
		default:
			return nil, fmt.Errorf("content[%d]: part type %q is not supported by the model's provider (Anthropic)", i, p.Type)
		}
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("content is empty")
	}
	return blocks, nil
}

// The Messages API response.
type anResponse struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Model   string `json:"model"`
	Content []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
	StopReason *string  `json:"stop_reason"`
	Usage      *anUsage `json:"usage"`
}

type anUsage struct {
	InputTokens              *int64 `json:"input_tokens"`
	OutputTokens             *int64 `json:"output_tokens"`
	CacheCreationInputTokens int64  `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64  `json:"cache_read_input_tokens"`
}

// prompt is every input token Anthropic processed: uncached, written to
// and read from its prompt cache, as OpenAI's prompt_tokens counts them.
func (u *anUsage) prompt() int64 {
	var n int64
	if u.InputTokens != nil {
		n = *u.InputTokens
	}
	return n + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// finishReason maps Anthropic's stop_reason to OpenAI's finish_reason.
func finishReason(stop string) string {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	default: // end_turn, stop_sequence, pause_turn
		return "stop"
	}
}

// OpenAI chat.completion types written by the translation.
type oaCompletion struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []oaChoice `json:"choices"`
	Usage   oaUsage    `json:"usage"`
}

type oaChoice struct {
	Index        int       `json:"index"`
	Message      oaOutMsg  `json:"message"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type oaOutMsg struct {
	Role      string          `json:"role"`
	Content   *string         `json:"content"`
	Refusal   *string         `json:"refusal"`
	ToolCalls []oaOutToolCall `json:"tool_calls,omitempty"`
}

type oaOutToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type oaUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// translateResponse turns a Messages response into a chat.completion.
func (a *Anthropic) translateResponse(upstreamModel string, raw []byte, status int) (*Response, error) {
	var in anResponse
	if err := json.Unmarshal(raw, &in); err != nil || in.Type != "message" {
		return nil, a.invalid(status, "not a Messages API message")
	}
	if in.Usage == nil || in.Usage.InputTokens == nil || in.Usage.OutputTokens == nil || *in.Usage.InputTokens < 0 || *in.Usage.OutputTokens < 0 {
		return nil, a.invalid(status, "no usage")
	}
	msg := oaOutMsg{Role: "assistant"}
	var text strings.Builder
	hasText := false
	for _, b := range in.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
			hasText = true
		case "tool_use":
			var tc oaOutToolCall
			tc.ID, tc.Type, tc.Function.Name = b.ID, "function", b.Name
			args := b.Input
			if len(args) == 0 || string(args) == "null" {
				args = json.RawMessage("{}")
			}
			tc.Function.Arguments = string(args)
			msg.ToolCalls = append(msg.ToolCalls, tc)
		}
		// thinking and other blocks have no chat.completion equivalent.
	}
	if hasText || len(msg.ToolCalls) == 0 {
		s := text.String()
		msg.Content = &s
	}
	finish := "stop"
	if in.StopReason != nil {
		finish = finishReason(*in.StopReason)
	}
	usage := Usage{PromptTokens: in.Usage.prompt(), CompletionTokens: *in.Usage.OutputTokens}
	out := oaCompletion{ID: in.ID, Object: "chat.completion", Created: a.now().Unix(), Model: in.Model,
		Choices: []oaChoice{{Message: msg, FinishReason: finish}},
		Usage:   oaUsage{PromptTokens: usage.PromptTokens, CompletionTokens: usage.CompletionTokens, TotalTokens: usage.PromptTokens + usage.CompletionTokens}}
	out.Usage.PromptTokensDetails.CachedTokens = in.Usage.CacheReadInputTokens
	if out.Model == "" {
		out.Model = upstreamModel
	}
	body, err := encodeJSON(out)
	if err != nil {
		return nil, fmt.Errorf("llm provider %q: encode response: %w", a.name, err)
	}
	return &Response{Body: body, Usage: usage, Provider: a.name, UpstreamModel: upstreamModel}, nil
}

// anthropicDecoder translates Messages stream events into chunks.
type anthropicDecoder struct {
	base    *httpBase
	created int64
	model   string
	id      string
	// blocks maps a tool_use content block index to its tool_calls index.
	blocks  map[int]int
	started bool
	prompt  int64
	output  int64
	cached  int64
	stopped bool // message_delta with a stop_reason arrived
}

func (d *anthropicDecoder) chunk(delta any, finish *string) json.RawMessage {
	b, _ := encodeJSON(map[string]any{
		"id": d.id, "object": "chat.completion.chunk", "created": d.created, "model": d.model,
		"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}},
	})
	return b
}

func (d *anthropicDecoder) decode(ev sseEvent) ([]json.RawMessage, bool, error) {
	var e struct {
		Type    string `json:"type"`
		Index   int    `json:"index"`
		Message struct {
			ID    string  `json:"id"`
			Model string  `json:"model"`
			Usage anUsage `json:"usage"`
		} `json:"message"`
		ContentBlock struct {
			Type string `json:"type"`
			Text string `json:"text"`
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"content_block"`
		Delta struct {
			Type        string  `json:"type"`
			Text        string  `json:"text"`
			PartialJSON string  `json:"partial_json"`
			StopReason  *string `json:"stop_reason"`
		} `json:"delta"`
		Usage *anUsage `json:"usage"`
	}
	if err := json.Unmarshal(ev.data, &e); err != nil {
		return nil, false, d.base.invalid(http.StatusOK, "stream event is not JSON")
	}
	if e.Type == "" {
		e.Type = ev.name
	}
	switch e.Type {
	case "message_start":
		d.started = true
		d.id = e.Message.ID
		if e.Message.Model != "" {
			d.model = e.Message.Model
		}
		d.prompt = e.Message.Usage.prompt()
		d.cached = e.Message.Usage.CacheReadInputTokens
		if e.Message.Usage.OutputTokens != nil {
			d.output = *e.Message.Usage.OutputTokens
		}
		return []json.RawMessage{d.chunk(map[string]any{"role": "assistant", "content": ""}, nil)}, false, nil
	case "content_block_start":
		switch e.ContentBlock.Type {
		case "tool_use":
			idx := len(d.blocks)
			d.blocks[e.Index] = idx
			return []json.RawMessage{d.chunk(map[string]any{"tool_calls": []any{map[string]any{
				"index": idx, "id": e.ContentBlock.ID, "type": "function",
				"function": map[string]any{"name": e.ContentBlock.Name, "arguments": ""}}}}, nil)}, false, nil
		case "text":
			if e.ContentBlock.Text != "" {
				return []json.RawMessage{d.chunk(map[string]any{"content": e.ContentBlock.Text}, nil)}, false, nil
			}
		}
		return nil, false, nil
	case "content_block_delta":
		switch e.Delta.Type {
		case "text_delta":
			return []json.RawMessage{d.chunk(map[string]any{"content": e.Delta.Text}, nil)}, false, nil
		case "input_json_delta":
			idx, ok := d.blocks[e.Index]
			if !ok {
				return nil, false, d.base.invalid(http.StatusOK, "input_json_delta for unknown content block %d", e.Index)
			}
			return []json.RawMessage{d.chunk(map[string]any{"tool_calls": []any{map[string]any{
				"index": idx, "function": map[string]any{"arguments": e.Delta.PartialJSON}}}}, nil)}, false, nil
		}
		return nil, false, nil // thinking_delta, signature_delta...
	case "message_delta":
		if e.Usage != nil {
			if e.Usage.OutputTokens != nil {
				d.output = *e.Usage.OutputTokens
			}
			if p := e.Usage.prompt(); p > d.prompt {
				d.prompt = p // newer API versions repeat cumulative input counts here
			}
		}
		if e.Delta.StopReason == nil {
			return nil, false, nil
		}
		d.stopped = true
		finish := finishReason(*e.Delta.StopReason)
		return []json.RawMessage{d.chunk(map[string]any{}, &finish)}, false, nil
	case "message_stop":
		b, _ := encodeJSON(map[string]any{
			"id": d.id, "object": "chat.completion.chunk", "created": d.created, "model": d.model, "choices": []any{},
			"usage": map[string]any{"prompt_tokens": d.prompt, "completion_tokens": d.output, "total_tokens": d.prompt + d.output,
				"prompt_tokens_details": map[string]any{"cached_tokens": d.cached}},
		})
		return []json.RawMessage{b}, true, nil
	case "error":
		var body struct {
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		_ = json.Unmarshal(ev.data, &body)
		status := map[string]int{
			"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403, "not_found_error": 404,
			"request_too_large": 413, "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529,
		}[body.Error.Type]
		if status == 0 {
			status = http.StatusInternalServerError
		}
		le := d.base.statusError(&http.Response{StatusCode: status, Header: http.Header{}}, ev.data, anthropicErrorBody)
		le.UpstreamStatus = status
		return nil, false, le
	default: // ping and future event types
		return nil, false, nil
	}
}

func (d *anthropicDecoder) eof() error {
	return &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Provider: d.base.name, Retryable: true, Class: ClassConnection,
		Message: fmt.Sprintf("provider %q ended the stream before message_stop", d.base.name)}
}

func (d *anthropicDecoder) partial() (int64, int64, bool) {
	return d.prompt, d.output, d.started
}
