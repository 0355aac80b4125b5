// Package openaiwire is OpenAI's chat completions wire format as Tollgate
// reads and writes it: the request and its messages, the chat.completion
// response, the chat.completion.chunk of a stream, usage and the error
// body. It is the one declaration of that format; the edge (handlers),
// the providers (llm) and the executor (completion/execution) all use it.
// It is pure: JSON shapes and small functions over them, no I/O.
//
// Tollgate forwards a client's body untouched, so these types name only
// the fields Tollgate reads or writes; decoding ignores the others.
// Strings that must reach the client byte for byte (content, tool call
// names and arguments) are kept as their JSON literals (json.RawMessage).
package openaiwire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Prompt is what makes up a request's prompt: its messages and the raw
// text of its tool definitions (which providers render into the prompt).
type Prompt struct {
	Messages []Message       `json:"messages"`
	Tools    json.RawMessage `json:"tools"`
}

// Request is a chat completion request, the fields a provider translation
// reads (Tools is parsed by ToolList). Its types are flat, not embedded,
// so a decoding error names the field as the client wrote it.
type Request struct {
	Messages            []Message       `json:"messages"`
	Tools               json.RawMessage `json:"tools"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	N                   *int64          `json:"n"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	Stop                json.RawMessage `json:"stop"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Logprobs            *bool           `json:"logprobs"`
	ResponseFormat      *ResponseFormat `json:"response_format"`
	User                string          `json:"user"`
}

// ToolList parses the request's tool definitions.
func (r Request) ToolList() ([]Tool, error) {
	if len(r.Tools) == 0 || string(r.Tools) == "null" {
		return nil, nil
	}
	var tools []Tool
	if err := json.Unmarshal(r.Tools, &tools); err != nil {
		return nil, fmt.Errorf("tools: %w", err)
	}
	return tools, nil
}

// Envelope is what the edge checks of a request before anything is
// stored: each message stays raw, so each is checked on its own, and
// every other field travels on to the provider unchecked.
type Envelope struct {
	Model               string            `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	Stream              bool              `json:"stream"`
	MaxTokens           *int64            `json:"max_tokens"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	N                   *int64            `json:"n"`
}

// MessageRole returns the role of a raw message, and false when it is not
// an object with a role.
func MessageRole(raw json.RawMessage) (string, bool) {
	var m struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.Role == "" {
		return "", false
	}
	return m.Role, true
}

// StreamOptions is a request's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// ResponseFormat is a request's response_format.
type ResponseFormat struct {
	Type string `json:"type"`
}

// WantsUsage reports whether a chat completion request asked for the
// final usage chunk of a stream (stream_options.include_usage).
func WantsUsage(body json.RawMessage) bool {
	var req struct {
		StreamOptions *StreamOptions `json:"stream_options"`
	}
	return json.Unmarshal(body, &req) == nil && req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}

// Message is a chat message: in a request's messages, or a choice's
// message in a response. Content is a string or an array of parts
// (ContentText reads both), or null.
type Message struct {
	Role       string          `json:"role"`
	Name       string          `json:"name,omitempty"`
	Content    json.RawMessage `json:"content"`
	Refusal    json.RawMessage `json:"refusal,omitempty"`
	ToolCalls  []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	// FunctionCall is the deprecated single function call of an
	// assistant message (before tool_calls).
	FunctionCall *FunctionCall `json:"function_call,omitempty"`
}

// ToolCall is a function call of an assistant message or, with Index, a
// piece of one in a stream chunk's delta. Function's name and arguments
// are JSON string literals; Text decodes them.
type ToolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is the function a tool call names, with its JSON
// arguments as a string, both kept as the literals the sender wrote.
type FunctionCall struct {
	Name      json.RawMessage `json:"name,omitempty"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// Text decodes the name and arguments (absent or null: empty).
func (f FunctionCall) Text() (name, arguments string, err error) {
	if name, err = Unquote(f.Name); err != nil {
		return "", "", fmt.Errorf("function.name: %w", err)
	}
	if arguments, err = Unquote(f.Arguments); err != nil {
		return "", "", fmt.Errorf("function.arguments: %w", err)
	}
	return name, arguments, nil
}

// Tool is a tool definition of a request.
type Tool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// ContentPart is one element of an array-valued message content. The
// fields only some readers use are raw (URL and Unquote read them).
type ContentPart struct {
	Type       string          `json:"type"`
	Text       string          `json:"text"`
	ImageURL   json.RawMessage `json:"image_url"`
	Refusal    json.RawMessage `json:"refusal"`
	InputAudio json.RawMessage `json:"input_audio"`
	File       json.RawMessage `json:"file"`
}

// URL is an image_url part's {"url"}.
func (p ContentPart) URL() (string, error) {
	var u struct {
		URL string `json:"url"`
	}
	if len(p.ImageURL) > 0 {
		if err := json.Unmarshal(p.ImageURL, &u); err != nil {
			return "", fmt.Errorf("image_url: %w", err)
		}
	}
	return u.URL, nil
}

// ContentText returns the text of a message content: the string itself,
// or the concatenated text parts of an array, plus the number of image
// parts. Absent or null content is empty.
func ContentText(raw json.RawMessage) (string, int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, 0, nil
	}
	var parts []ContentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", 0, fmt.Errorf("content is neither a string nor an array of parts: %w", err)
	}
	// A builder, not +=: 150,000 parts concatenated one by one cost
	// seconds of CPU (quadratic copying).
	var text strings.Builder
	images := 0
	for _, p := range parts {
		switch p.Type {
		case "text":
			text.WriteString(p.Text)
		case "image_url", "input_image":
			images++
		}
	}
	return text.String(), images, nil
}

// errNotString is Unquote's error for a literal that is not a string.
var errNotString = errors.New("not a string")

// Unquote decodes a JSON string literal; absent or null is "".
func Unquote(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] != '"' {
		return "", errNotString
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("decode string: %w", err)
	}
	return s, nil
}
