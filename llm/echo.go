package llm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Echo is the built-in development provider: it answers with the text of the
// last user message, deterministically, and never calls the network.
type Echo struct {
	name string
	now  func() time.Time
}

// NewEcho returns an echo provider reporting the given provider name.
func NewEcho(name string) *Echo { return &Echo{name: name, now: time.Now} }

// ChatCompletion implements Provider.
func (e *Echo) ChatCompletion(ctx context.Context, upstreamModel string, body json.RawMessage) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}
	var req struct {
		Messages            []chatMessage   `json:"messages"`
		Tools               json.RawMessage `json:"tools"`
		MaxTokens           *int64          `json:"max_tokens"`
		MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, invalidRequest(e.name, "request body is not a valid chat completion request: %v", err)
	}
	if len(req.Messages) == 0 {
		return nil, invalidRequest(e.name, "messages: at least one message is required")
	}
	limit := int64(-1)
	for _, f := range []struct {
		name string
		v    *int64
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if f.v == nil {
			continue
		}
		if *f.v < 1 {
			return nil, invalidRequest(e.name, "%s must be at least 1, got %d", f.name, *f.v)
		}
		if limit < 0 || *f.v < limit {
			limit = *f.v
		}
	}
	prompt, err := promptTokens(req.Messages, req.Tools)
	if err != nil {
		return nil, invalidRequest(e.name, "%v", err)
	}

	var answer string
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			answer, _, err = contentText(req.Messages[i].Content)
			if err != nil {
				return nil, invalidRequest(e.name, "messages[%d]: %v", i, err)
			}
			break
		}
	}
	finish := "stop"
	if limit >= 0 {
		if cut, truncated := truncateTokens(answer, limit); truncated {
			answer, finish = cut, "length"
		}
	}
	completion := CountTokens(answer)

	sum := sha256.Sum256(body)
	out, err := json.Marshal(echoCompletion{
		ID:      "chatcmpl-echo-" + hex.EncodeToString(sum[:12]),
		Object:  "chat.completion",
		Created: e.now().Unix(),
		Model:   upstreamModel,
		Choices: []echoChoice{{
			Message:      echoMessage{Role: "assistant", Content: answer},
			FinishReason: finish,
		}},
		Usage: echoUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
		// Identifies the echo backend to clients that log the fingerprint.
		SystemFingerprint: "tollgate-echo",
	})
	if err != nil {
		return nil, fmt.Errorf("echo: encode response: %w", err)
	}
	return &Response{
		Body:          out,
		Usage:         Usage{PromptTokens: prompt, CompletionTokens: completion},
		Provider:      e.name,
		UpstreamModel: upstreamModel,
	}, nil
}

// The echo response types mirror OpenAI's chat.completion object field for field.
type echoCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []echoChoice `json:"choices"`
	Usage             echoUsage    `json:"usage"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

type echoChoice struct {
	Index        int         `json:"index"`
	Message      echoMessage `json:"message"`
	Logprobs     *struct{}   `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
}

type echoMessage struct {
	Role    string    `json:"role"`
	Content string    `json:"content"`
	Refusal *struct{} `json:"refusal"`
}

type echoUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}
