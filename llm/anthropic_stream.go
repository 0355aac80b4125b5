package llm

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

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

// anEvent is one Messages stream event, every type's fields together.
type anEvent struct {
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

// chunk is a chat.completion.chunk of the message so far with one choice.
func (d *anthropicDecoder) chunk(delta openaiwire.Delta, finish *string) []json.RawMessage {
	b, _ := encodeJSON(openaiwire.Chunk{
		ID: d.id, Object: openaiwire.ObjectChunk, Created: d.created, Model: d.model,
		Choices: []openaiwire.ChunkChoice{{Delta: delta, Logprobs: openaiwire.Null, FinishReason: finish}},
	})
	return []json.RawMessage{b}
}

func (d *anthropicDecoder) decode(ev sseEvent) ([]json.RawMessage, bool, error) {
	var e anEvent
	if err := json.Unmarshal(ev.data, &e); err != nil {
		return nil, false, d.base.invalid(http.StatusOK, "stream event is not JSON")
	}
	if e.Type == "" {
		e.Type = ev.name
	}
	switch e.Type {
	case "message_start":
		return d.messageStart(e), false, nil
	case "content_block_start":
		return d.blockStart(e), false, nil
	case "content_block_delta":
		chunks, err := d.blockDelta(e)
		return chunks, false, err
	case "message_delta":
		return d.messageDelta(e), false, nil
	case "message_stop":
		usage, _ := encodeJSON(anthropicUsage(d.prompt, d.output, d.cached))
		b, _ := encodeJSON(openaiwire.Chunk{ID: d.id, Object: openaiwire.ObjectChunk, Created: d.created, Model: d.model,
			Choices: []openaiwire.ChunkChoice{}, Usage: usage})
		return []json.RawMessage{b}, true, nil
	case "error":
		return nil, false, d.streamError(ev.data)
	default: // ping and future event types
		return nil, false, nil
	}
}

func (d *anthropicDecoder) messageStart(e anEvent) []json.RawMessage {
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
	return d.chunk(openaiwire.Delta{Role: "assistant", Content: openaiwire.String("")}, nil)
}

func (d *anthropicDecoder) blockStart(e anEvent) []json.RawMessage {
	switch e.ContentBlock.Type {
	case "tool_use":
		idx := len(d.blocks)
		d.blocks[e.Index] = idx
		return d.chunk(openaiwire.Delta{ToolCalls: []openaiwire.ToolCall{{Index: &idx, ID: e.ContentBlock.ID, Type: "function",
			Function: openaiwire.FunctionCall{Name: openaiwire.String(e.ContentBlock.Name), Arguments: openaiwire.String("")}}}}, nil)
	case "text":
		if e.ContentBlock.Text != "" {
			return d.chunk(openaiwire.Delta{Content: openaiwire.String(e.ContentBlock.Text)}, nil)
		}
	}
	return nil
}

func (d *anthropicDecoder) blockDelta(e anEvent) ([]json.RawMessage, error) {
	switch e.Delta.Type {
	case "text_delta":
		return d.chunk(openaiwire.Delta{Content: openaiwire.String(e.Delta.Text)}, nil), nil
	case "input_json_delta":
		idx, ok := d.blocks[e.Index]
		if !ok {
			return nil, d.base.invalid(http.StatusOK, "input_json_delta for unknown content block %d", e.Index)
		}
		return d.chunk(openaiwire.Delta{ToolCalls: []openaiwire.ToolCall{{Index: &idx,
			Function: openaiwire.FunctionCall{Arguments: openaiwire.String(e.Delta.PartialJSON)}}}}, nil), nil
	}
	return nil, nil // thinking_delta, signature_delta...
}

func (d *anthropicDecoder) messageDelta(e anEvent) []json.RawMessage {
	if e.Usage != nil {
		if e.Usage.OutputTokens != nil {
			d.output = *e.Usage.OutputTokens
		}
		if p := e.Usage.prompt(); p > d.prompt {
			d.prompt = p // newer API versions repeat cumulative input counts here
		}
	}
	if e.Delta.StopReason == nil {
		return nil
	}
	d.stopped = true
	finish := finishReason(*e.Delta.StopReason)
	return d.chunk(openaiwire.Delta{}, &finish)
}

// streamError maps an error event, which carries no status, by its type.
func (d *anthropicDecoder) streamError(data []byte) *Error {
	var body struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &body)
	status := map[string]int{
		"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403, "not_found_error": 404,
		"request_too_large": 413, "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529,
	}[body.Error.Type]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	le := d.base.statusError(&http.Response{StatusCode: status, Header: http.Header{}}, data, anthropicErrorBody)
	le.UpstreamStatus = status
	return le
}

func (d *anthropicDecoder) eof() error {
	return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: d.base.name, Retryable: true, Class: ClassConnection,
		Message: fmt.Sprintf("provider %q ended the stream before message_stop", d.base.name)}
}

func (d *anthropicDecoder) partial() (int64, int64, bool) {
	return d.prompt, d.output, d.started
}
