package llm

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

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
	var in openaiwire.Request
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, invalidRequest(a.name, "request body is not a valid chat completion request: %v", err)
	}
	tools, err := in.ToolList()
	if err != nil {
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
	if err := translateMessages(out, in.Messages, bad); err != nil {
		return nil, err
	}
	if err := translateTools(out, tools, in, bad); err != nil {
		return nil, err
	}
	return out, nil
}

// refusal builds the 400 of a request Anthropic cannot serve.
type refusal func(format string, args ...any) error

// translateMessages turns the messages into the system prompt and
// alternating user and assistant turns.
func translateMessages(out *anRequest, msgs []openaiwire.Message, bad refusal) error {
	var system []string
	for i, m := range msgs {
		switch m.Role {
		case "system", "developer":
			text, _, err := openaiwire.ContentText(m.Content)
			if err != nil {
				return bad("messages[%d]: %v", i, err)
			}
			system = append(system, text)
		case "user":
			blocks, err := userBlocks(m.Content)
			if err != nil {
				return bad("messages[%d]: %v", i, err)
			}
			out.Messages = appendMessage(out.Messages, "user", blocks)
		case "assistant":
			blocks, err := assistantBlocks(m, i, bad)
			if err != nil {
				return err
			}
			if len(blocks) == 0 {
				continue // an empty assistant turn carries nothing Anthropic accepts
			}
			out.Messages = appendMessage(out.Messages, "assistant", blocks)
		case "tool":
			if m.ToolCallID == "" {
				return bad("messages[%d].tool_call_id is required for a tool message", i)
			}
			text, _, err := openaiwire.ContentText(m.Content)
			if err != nil {
				return bad("messages[%d]: %v", i, err)
			}
			// Tool results go back in a user turn, several results in one.
			out.Messages = appendMessage(out.Messages, "user", []anBlock{{Type: "tool_result", ToolUseID: m.ToolCallID, Content: &text}})
		default:
			return bad("messages[%d].role %q is not supported by the model's provider (Anthropic)", i, m.Role)
		}
	}
	out.System = strings.Join(system, "\n\n")
	if len(out.Messages) == 0 {
		return bad("messages: at least one user message is required")
	}
	return nil
}

// assistantBlocks translates an assistant message (messages[i]): its text
// and its tool calls.
func assistantBlocks(m openaiwire.Message, i int, bad refusal) ([]anBlock, error) {
	text, _, err := openaiwire.ContentText(m.Content)
	if err != nil {
		return nil, bad("messages[%d]: %v", i, err)
	}
	var blocks []anBlock
	if text != "" {
		blocks = append(blocks, anBlock{Type: "text", Text: text})
	}
	for j, tc := range m.ToolCalls {
		name, args, err := tc.Function.Text()
		if err != nil {
			return nil, bad("request body is not a valid chat completion request: messages[%d].tool_calls[%d].%v", i, j, err)
		}
		input := json.RawMessage(args)
		if strings.TrimSpace(args) == "" {
			input = json.RawMessage("{}")
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(input, &obj); err != nil || obj == nil {
			return nil, bad("messages[%d].tool_calls[%d].function.arguments must be a JSON object", i, j)
		}
		blocks = append(blocks, anBlock{Type: "tool_use", ID: tc.ID, Name: name, Input: input})
	}
	return blocks, nil
}

// translateTools translates the tool definitions, tool_choice and
// parallel_tool_calls.
func translateTools(out *anRequest, tools []openaiwire.Tool, in openaiwire.Request, bad refusal) error {
	for i, t := range tools {
		if t.Type != "function" && t.Type != "" {
			return bad("tools[%d].type %q is not supported by the model's provider (Anthropic)", i, t.Type)
		}
		schema := t.Function.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out.Tools = append(out.Tools, anTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
	}
	if len(in.ToolChoice) > 0 && string(in.ToolChoice) != "null" {
		choice, err := toolChoice(in.ToolChoice, bad)
		if err != nil {
			return err
		}
		out.ToolChoice = choice
	}
	if in.ParallelToolCalls != nil && !*in.ParallelToolCalls && len(out.Tools) > 0 {
		if out.ToolChoice == nil {
			out.ToolChoice = &anToolChoice{Type: "auto"}
		}
		if out.ToolChoice.Type != "none" {
			out.ToolChoice.DisableParallelToolUse = true
		}
	}
	return nil
}

// toolChoice translates OpenAI's tool_choice.
func toolChoice(raw json.RawMessage, bad refusal) (*anToolChoice, error) {
	var s string
	var obj struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	switch {
	case json.Unmarshal(raw, &s) == nil:
		switch s {
		case "auto":
			return &anToolChoice{Type: "auto"}, nil
		case "none":
			return &anToolChoice{Type: "none"}, nil
		case "required":
			return &anToolChoice{Type: "any"}, nil
		default:
			return nil, bad("tool_choice %q: want auto, none, required or a function", s)
		}
	case json.Unmarshal(raw, &obj) == nil && obj.Function.Name != "":
		return &anToolChoice{Type: "tool", Name: obj.Function.Name}, nil
	default:
		return nil, bad("tool_choice must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":...}}")
	}
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
	var parts []openaiwire.ContentPart
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
			b, err := imageBlock(p)
			if err != nil {
				return nil, fmt.Errorf("content[%d]: %w", i, err)
			}
			blocks = append(blocks, b)
		default:
			return nil, fmt.Errorf("content[%d]: part type %q is not supported by the model's provider (Anthropic)", i, p.Type)
		}
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("content is empty")
	}
	return blocks, nil
}

// imageBlock translates an image_url part: a base64 data URL or a URL.
func imageBlock(p openaiwire.ContentPart) (anBlock, error) {
	u, err := p.URL()
	if err != nil {
		return anBlock{}, err
	}
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		media, isB64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isB64 {
			return anBlock{}, fmt.Errorf("an image data URL must be base64 (data:image/png;base64,...)")
		}
		return anBlock{Type: "image", Source: &anSource{Type: "base64", MediaType: media, Data: data}}, nil
	}
	return anBlock{Type: "image", Source: &anSource{Type: "url", URL: u}}, nil
}
