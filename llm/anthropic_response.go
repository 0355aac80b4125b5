package llm

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

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

// translateResponse turns a Messages response into a chat.completion.
func (a *Anthropic) translateResponse(upstreamModel string, raw []byte, status int) (*Response, error) {
	var in anResponse
	if err := json.Unmarshal(raw, &in); err != nil || in.Type != "message" {
		return nil, a.invalid(status, "not a Messages API message")
	}
	if in.Usage == nil || in.Usage.InputTokens == nil || in.Usage.OutputTokens == nil || *in.Usage.InputTokens < 0 || *in.Usage.OutputTokens < 0 {
		return nil, a.invalid(status, "no usage")
	}
	msg := openaiwire.Message{Role: "assistant", Refusal: openaiwire.Null}
	var text strings.Builder
	hasText := false
	for _, b := range in.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
			hasText = true
		case "tool_use":
			args := b.Input
			if len(args) == 0 || string(args) == "null" {
				args = json.RawMessage("{}")
			}
			msg.ToolCalls = append(msg.ToolCalls, openaiwire.ToolCall{ID: b.ID, Type: "function",
				Function: openaiwire.FunctionCall{Name: openaiwire.OptionalString(b.Name), Arguments: openaiwire.String(string(args))}})
		}
		// thinking and other blocks have no chat.completion equivalent.
	}
	if hasText || len(msg.ToolCalls) == 0 {
		msg.Content = openaiwire.String(text.String())
	}
	finish := "stop"
	if in.StopReason != nil {
		finish = finishReason(*in.StopReason)
	}
	usage := Usage{PromptTokens: in.Usage.prompt(), CompletionTokens: *in.Usage.OutputTokens}
	out := openaiwire.Completion{ID: in.ID, Object: openaiwire.ObjectCompletion, Created: a.now().Unix(), Model: in.Model,
		Choices: []openaiwire.Choice{{Message: msg, Logprobs: openaiwire.Null, FinishReason: &finish}},
		Usage:   anthropicUsage(usage.PromptTokens, usage.CompletionTokens, in.Usage.CacheReadInputTokens)}
	if out.Model == "" {
		out.Model = upstreamModel
	}
	body, err := encodeJSON(out)
	if err != nil {
		return nil, fmt.Errorf("llm provider %q: encode response: %w", a.name, err)
	}
	return &Response{Body: body, Usage: usage, Provider: a.name, UpstreamModel: upstreamModel}, nil
}

// anthropicUsage is the OpenAI usage of an Anthropic answer, with the
// tokens read from its prompt cache as cached_tokens.
func anthropicUsage(prompt, completion, cached int64) openaiwire.Usage {
	u := openaiwire.NewUsage(prompt, completion)
	u.PromptTokensDetails = &openaiwire.PromptTokensDetails{CachedTokens: cached}
	return u
}
