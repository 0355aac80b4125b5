package openaiwire

import (
	"encoding/json"
	"fmt"
)

// Chunk is a chat.completion.chunk, one event of a stream. Chunk,
// ChunkChoice and Delta declare their fields in alphabetical order, the
// key order the chunks Tollgate writes have always had. Usage is kept
// raw: null on the chunks of a stream that reports usage at its end,
// omitted on others, a Usage object on the final usage-only chunk.
type Chunk struct {
	Choices           []ChunkChoice   `json:"choices"`
	Created           int64           `json:"created,omitempty"`
	ID                string          `json:"id"`
	Model             string          `json:"model"`
	Object            string          `json:"object"`
	SystemFingerprint string          `json:"system_fingerprint,omitempty"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

// ChunkChoice is one choice of a chunk.
type ChunkChoice struct {
	Delta        Delta           `json:"delta"`
	FinishReason *string         `json:"finish_reason"`
	Index        int             `json:"index"`
	Logprobs     json.RawMessage `json:"logprobs,omitempty"`
}

// Delta is what a chunk adds to its choice's message; an empty Delta
// encodes as {}.
type Delta struct {
	Content   json.RawMessage `json:"content,omitempty"`
	Refusal   json.RawMessage `json:"refusal,omitempty"`
	Role      string          `json:"role,omitempty"`
	ToolCalls []ToolCall      `json:"tool_calls,omitempty"`
}

// UsageOf returns the usage a chunk reports, nil when it reports none.
func (c Chunk) UsageOf() (*UsageReport, error) {
	if len(c.Usage) == 0 || string(c.Usage) == "null" {
		return nil, nil
	}
	var u UsageReport
	if err := json.Unmarshal(c.Usage, &u); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return &u, nil
}

// IsUsageChunk reports whether a stream chunk is the final usage-only
// chunk (no choices, a usage object), which a client that did not ask
// for usage (WantsUsage) must not receive.
func IsUsageChunk(chunk json.RawMessage) bool {
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	if json.Unmarshal(chunk, &c) != nil {
		return false
	}
	return len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}
