package openaiwire

import (
	"bytes"
	"encoding/json"
)

// Null is the JSON null, for fields that are sent as null (logprobs,
// refusal) rather than left out.
var Null = json.RawMessage("null")

// String is s as a JSON string literal, without HTML escaping (the
// encoder of the enclosing object decides that).
func String(s string) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// OptionalString is String(s), or nothing (an omitted field) for "".
func OptionalString(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return String(s)
}

// Completion is a chat.completion object.
type Completion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
	Choices           []Choice `json:"choices"`
	Usage             Usage    `json:"usage"`
}

// ObjectCompletion and ObjectChunk are the "object" of a response and of
// a stream chunk.
const (
	ObjectCompletion = "chat.completion"
	ObjectChunk      = "chat.completion.chunk"
)

// Choice is one choice of a chat.completion. Logprobs left empty is
// omitted; set it to Null to send null.
type Choice struct {
	Index        int             `json:"index"`
	Message      Message         `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs,omitempty"`
	FinishReason *string         `json:"finish_reason"`
}

// Usage is the token usage Tollgate writes into a response or a chunk.
type Usage struct {
	PromptTokens        int64                `json:"prompt_tokens"`
	CompletionTokens    int64                `json:"completion_tokens"`
	TotalTokens         int64                `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// NewUsage is the usage of prompt and completion tokens, with their total.
func NewUsage(prompt, completion int64) Usage {
	return Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

// PromptTokensDetails is usage.prompt_tokens_details.
type PromptTokensDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// UsageReport is a usage object as a provider reported it: a count it
// left out is nil.
type UsageReport struct {
	PromptTokens     *int64 `json:"prompt_tokens"`
	CompletionTokens *int64 `json:"completion_tokens"`
}

// Counts returns both counts, and false unless both were reported.
func (u *UsageReport) Counts() (prompt, completion int64, ok bool) {
	if u == nil || u.PromptTokens == nil || u.CompletionTokens == nil {
		return 0, 0, false
	}
	return *u.PromptTokens, *u.CompletionTokens, true
}

// ResponseView is the part of a provider's chat.completion that Tollgate
// checks and counts: its choices' messages and its usage.
type ResponseView struct {
	Choices []struct {
		Message Message `json:"message"`
	} `json:"choices"`
	Usage *UsageReport `json:"usage"`
}

// Model is one entry of GET /v1/models; Description is Tollgate's own.
type Model struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	Description string `json:"description,omitempty"`
}

// ModelList is the answer of GET /v1/models.
type ModelList struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}
