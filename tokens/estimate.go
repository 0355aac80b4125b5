package tokens

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/tiktoken-go/tokenizer"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// Overheads of OpenAI's chat format: each message is wrapped as
// <|im_start|>{role}<|im_sep|>{content}<|im_end|> (3 tokens besides the
// role; 4 here), a name costs 1 more, and the reply is primed with 3.
// Separately counted pieces that the provider joins (content parts, tool
// call fields) may merge across the seam; each piece gets pieceSlack.
const (
	perMessage   = 4
	perName      = 1
	replyPrime   = 3
	pieceSlack   = 2
	perToolCall  = 8
	maxChoices   = 128
	defaultLimit = 256 << 10
)

// Counter estimates prompts. Its zero value is ready: it tokenizes
// prompts of up to 256 KiB of text and bounds bigger ones by their bytes.
// It counts how it estimated, for metrics and tests; share one to read them.
type Counter struct {
	// MaxTokenizeBytes is the most text that is run through a tokenizer
	// (about 10 MB/s on one core); above it the byte bound is used. 0:
	// 256 KiB; negative: never tokenize.
	MaxTokenizeBytes int
	tokenized        atomic.Int64
	bounded          atomic.Int64
}

// Tokenized is how many estimates ran a tokenizer; ByteBounded how many
// used the byte bound.
func (c *Counter) Tokenized() int64   { return c.tokenized.Load() }
func (c *Counter) ByteBounded() int64 { return c.bounded.Load() }

// Estimate is a request's token bound and completion size.
type Estimate struct {
	// PromptTokens is an upper bound of the prompt tokens billed.
	PromptTokens int64
	// N is the number of choices (1 when absent).
	N int64
	// MaxTokens is max_completion_tokens, else max_tokens; 0 when absent.
	MaxTokens int64
	// Encoding is how the text was counted.
	Encoding Encoding
	Images   int64
}

// ParamError is a request field that cannot be read; Param names it.
type ParamError struct {
	Param string
	Err   error
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Err.Error() }
func (e *ParamError) Unwrap() error { return e.Err }

// request is what the estimate reads of a chat completion request: the
// messages (openaiwire's), the texts rendered into the prompt and, raw so
// a bad one is named with its value, the limits.
type request struct {
	Messages            []openaiwire.Message `json:"messages"`
	Tools               json.RawMessage      `json:"tools"`
	Functions           json.RawMessage      `json:"functions"`
	ResponseFormat      json.RawMessage      `json:"response_format"`
	Prediction          json.RawMessage      `json:"prediction"`
	N                   json.RawMessage      `json:"n"`
	MaxTokens           json.RawMessage      `json:"max_tokens"`
	MaxCompletionTokens json.RawMessage      `json:"max_completion_tokens"`
}

// prompt is a request's text, gathered once, and its fixed overheads.
type prompt struct {
	texts    []string // counted one by one
	bytes    int64    // of texts
	overhead int64    // tokens added to either count
	images   int64
}

func (p *prompt) add(s string) {
	if s != "" {
		p.texts = append(p.texts, s)
		p.bytes += int64(len(s))
		p.overhead += pieceSlack
	}
}

// Prompt bounds the prompt of an OpenAI chat completion request body for
// a model of family f.
func (c *Counter) Prompt(body []byte, f Family) (Estimate, error) {
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return Estimate{}, &ParamError{Param: "messages", Err: fmt.Errorf("the request cannot be read: %w", err)}
	}
	est := Estimate{N: 1, Encoding: f.Encoding}
	var err error
	if est.N, err = intParam(req.N, "n", 1); err != nil {
		return Estimate{}, err
	}
	if est.N < 1 || est.N > maxChoices {
		return Estimate{}, &ParamError{Param: "n", Err: fmt.Errorf("must be between 1 and %d, got %d", maxChoices, est.N)}
	}
	if est.MaxTokens, err = intParam(req.MaxCompletionTokens, "max_completion_tokens", 0); err != nil {
		return Estimate{}, err
	}
	if est.MaxTokens <= 0 {
		if est.MaxTokens, err = intParam(req.MaxTokens, "max_tokens", 0); err != nil {
			return Estimate{}, err
		}
	}
	est.MaxTokens = max(est.MaxTokens, 0)
	p := prompt{overhead: replyPrime}
	for i, m := range req.Messages {
		if err := p.calls(m); err != nil {
			// A name or arguments that is not a string: the request
			// itself cannot be read, as when it is not JSON.
			return Estimate{}, &ParamError{Param: "messages", Err: fmt.Errorf("the request cannot be read: messages[%d]: %w", i, err)}
		}
		if err := p.content(m.Content, f); err != nil {
			return Estimate{}, &ParamError{Param: fmt.Sprintf("messages[%d].content", i), Err: err}
		}
	}
	for _, raw := range []json.RawMessage{req.Tools, req.Functions, req.ResponseFormat, req.Prediction} {
		if len(raw) > 0 && string(raw) != "null" {
			p.add(string(raw))
		}
	}
	if defs := toolCount(req.Tools) + toolCount(req.Functions); defs > 0 {
		p.overhead += f.ToolsBlock + defs*toolPerFunction
	}
	est.Images = p.images
	est.PromptTokens, est.Encoding = c.count(&p, f.Encoding)
	return est, nil
}

// count is the token bound of p's texts: the tokenizer's counts, or their
// bytes when the tokenizer is unknown or the text too big.
func (c *Counter) count(p *prompt, enc Encoding) (int64, Encoding) {
	fixed := p.overhead
	limit := c.MaxTokenizeBytes
	if limit == 0 {
		limit = defaultLimit
	}
	codec := codecFor(enc)
	if codec == nil || limit < 0 || p.bytes > int64(limit) {
		c.bounded.Add(1)
		return p.bytes + fixed, Bytes
	}
	c.tokenized.Add(1)
	var n int64
	for _, s := range p.texts {
		k, err := codec.Count(s)
		if err != nil {
			k = len(s)
		}
		// A token is at least one byte: the byte bound caps every count.
		n += min(int64(k), int64(len(s)))
	}
	return n + fixed, enc
}

func codecFor(enc Encoding) tokenizer.Codec {
	var name tokenizer.Encoding
	switch enc {
	case O200k:
		name = tokenizer.O200kBase
	case Cl100k:
		name = tokenizer.Cl100kBase
	default:
		return nil
	}
	codec, err := tokenizer.Get(name)
	if err != nil {
		return nil
	}
	return codec
}

// calls gathers one message's text and overheads but its content: role,
// name, tool call id and the function calls.
func (p *prompt) calls(m openaiwire.Message) error {
	p.overhead += perMessage
	p.add(m.Role)
	if m.Name != "" {
		p.overhead += perName
		p.add(m.Name)
	}
	p.add(m.ToolCallID)
	for j, tc := range m.ToolCalls {
		p.overhead += perToolCall
		p.add(tc.ID)
		if err := p.function(tc.Function); err != nil {
			return fmt.Errorf("tool_calls[%d].%w", j, err)
		}
	}
	if fc := m.FunctionCall; fc != nil {
		p.overhead += perToolCall
		if err := p.function(*fc); err != nil {
			return fmt.Errorf("function_call.%w", err)
		}
	}
	return nil
}

// function gathers a function call's name and arguments.
func (p *prompt) function(fc openaiwire.FunctionCall) error {
	name, args, err := fc.Text()
	if err != nil {
		return err
	}
	p.add(name)
	p.add(args)
	return nil
}

// content gathers a message content: a string, or an array of parts whose
// texts are joined (the provider renders them in sequence), images at
// the family's bound, audio and files at their bytes.
func (p *prompt) content(raw json.RawMessage, f Family) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		p.add(s)
		return nil
	}
	var parts []openaiwire.ContentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return fmt.Errorf("neither a string nor an array of parts: %w", err)
	}
	var text strings.Builder
	for _, pt := range parts {
		switch pt.Type {
		case "image_url", "input_image", "image":
			p.images++
			p.overhead += f.ImageTokens
		default:
			refusal, err := openaiwire.Unquote(pt.Refusal)
			if err != nil {
				return fmt.Errorf("neither a string nor an array of parts: refusal: %w", err)
			}
			text.WriteString(pt.Text)
			text.WriteString(refusal)
			// Audio and files are bounded by their (base64) bytes.
			p.overhead += int64(len(pt.InputAudio) + len(pt.File))
		}
		p.overhead += pieceSlack
	}
	p.add(text.String())
	return nil
}

// toolCount is the number of definitions in a tools or functions array.
func toolCount(raw json.RawMessage) int64 {
	if len(raw) == 0 || raw[0] != '[' {
		return 0
	}
	var defs []json.RawMessage
	if json.Unmarshal(raw, &defs) != nil {
		return 1
	}
	return int64(len(defs))
}

// intParam reads an optional integer field.
func intParam(raw json.RawMessage, name string, absent int64) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return absent, nil
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, &ParamError{Param: name, Err: fmt.Errorf("must be an integer, got %s", truncate(raw))}
	}
	return v, nil
}

func truncate(raw json.RawMessage) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "…"
	}
	return string(raw)
}
