package llm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// Echo is the built-in development provider: it answers with the text of the
// last user message, deterministically, and never calls the network.
type Echo struct {
	name string
	now  func() time.Time
}

// NewEcho returns an echo provider reporting the given provider name.
func NewEcho(name string) *Echo { return &Echo{name: name, now: time.Now} }

// echoAnswer is what the echo provider answers to a request.
type echoAnswer struct {
	text, finish       string
	prompt, completion int64
	id                 string
}

// answer parses a request and computes the echo answer.
func (e *Echo) answer(ctx context.Context, body json.RawMessage) (echoAnswer, error) {
	if err := ctx.Err(); err != nil {
		return echoAnswer{}, fmt.Errorf("echo: %w", err)
	}
	// Only the fields the echo reads: it ignores the others, as before.
	var req struct {
		openaiwire.Prompt
		MaxTokens           *int64 `json:"max_tokens"`
		MaxCompletionTokens *int64 `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return echoAnswer{}, invalidRequest(e.name, "request body is not a valid chat completion request: %v", err)
	}
	if len(req.Messages) == 0 {
		return echoAnswer{}, invalidRequest(e.name, "messages: at least one message is required")
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
			return echoAnswer{}, invalidRequest(e.name, "%s must be at least 1, got %d", f.name, *f.v)
		}
		if limit < 0 || *f.v < limit {
			limit = *f.v
		}
	}
	prompt, err := promptTokens(req.Prompt)
	if err != nil {
		return echoAnswer{}, invalidRequest(e.name, "%v", err)
	}

	var answer string
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			answer, _, err = openaiwire.ContentText(req.Messages[i].Content)
			if err != nil {
				return echoAnswer{}, invalidRequest(e.name, "messages[%d]: %v", i, err)
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
	// The request minus "stream" and "stream_options" identifies the
	// answer, so a streamed and a plain call of one request share an id.
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(body, &fields)
	delete(fields, "stream")
	delete(fields, "stream_options")
	canonical, _ := json.Marshal(fields)
	sum := sha256.Sum256(canonical)
	return echoAnswer{text: answer, finish: finish, prompt: prompt, completion: CountTokens(answer),
		id: "chatcmpl-echo-" + hex.EncodeToString(sum[:12])}, nil
}

// ChatCompletion implements Provider.
func (e *Echo) ChatCompletion(ctx context.Context, upstreamModel string, body json.RawMessage) (*Response, error) {
	a, err := e.answer(ctx, body)
	if err != nil {
		return nil, err
	}
	finish := a.finish
	out, err := json.Marshal(openaiwire.Completion{
		ID:      a.id,
		Object:  openaiwire.ObjectCompletion,
		Created: e.now().Unix(),
		Model:   upstreamModel,
		Choices: []openaiwire.Choice{{
			Message:      openaiwire.Message{Role: "assistant", Content: openaiwire.String(a.text), Refusal: openaiwire.Null},
			Logprobs:     openaiwire.Null,
			FinishReason: &finish,
		}},
		Usage: openaiwire.NewUsage(a.prompt, a.completion),
		// Identifies the echo backend to clients that log the fingerprint.
		SystemFingerprint: echoFingerprint,
	})
	if err != nil {
		return nil, fmt.Errorf("echo: encode response: %w", err)
	}
	return &Response{
		Body:          out,
		Usage:         Usage{PromptTokens: a.prompt, CompletionTokens: a.completion},
		Provider:      e.name,
		UpstreamModel: upstreamModel,
	}, nil
}

// ChatCompletionStream implements Provider: the answer streamed one token
// (CountTokens' tokens, roughly words) per chunk after a role chunk, then
// the finish chunk and the usage chunk. The usage is reported, not
// estimated: the number of content chunks is the completion token count.
func (e *Echo) ChatCompletionStream(ctx context.Context, upstreamModel string, body json.RawMessage) (Stream, error) {
	start := e.now()
	a, err := e.answer(ctx, body)
	if err != nil {
		return nil, err
	}
	created := e.now().Unix()
	chunk := func(delta *openaiwire.Delta, finish *string, usage json.RawMessage) json.RawMessage {
		choices := []openaiwire.ChunkChoice{}
		if delta != nil {
			choices = append(choices, openaiwire.ChunkChoice{Delta: *delta, Logprobs: openaiwire.Null, FinishReason: finish})
		}
		b, _ := json.Marshal(openaiwire.Chunk{
			ID: a.id, Object: openaiwire.ObjectChunk, Created: created, Model: upstreamModel,
			SystemFingerprint: echoFingerprint, Choices: choices, Usage: usage,
		})
		return b
	}
	chunks := []json.RawMessage{chunk(&openaiwire.Delta{Role: "assistant", Content: openaiwire.String(""), Refusal: openaiwire.Null}, nil, openaiwire.Null)}
	for rest := a.text; rest != ""; {
		var tok string
		tok, rest = nextToken(rest)
		chunks = append(chunks, chunk(&openaiwire.Delta{Content: openaiwire.String(tok)}, nil, openaiwire.Null))
	}
	finish := a.finish
	usage, _ := json.Marshal(openaiwire.NewUsage(a.prompt, a.completion))
	chunks = append(chunks, chunk(&openaiwire.Delta{}, &finish, openaiwire.Null), chunk(nil, nil, usage))
	return newChunkStream(e.name, upstreamModel, &echoSource{ctx: ctx, chunks: chunks}, e.now, start, body), nil
}

// echoSource hands out precomputed chunks one at a time, so a caller that
// goes away mid-stream really stops it.
type echoSource struct {
	ctx    context.Context
	chunks []json.RawMessage
}

func (s *echoSource) fill() ([]json.RawMessage, bool, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("echo: %w", err)
	}
	if len(s.chunks) == 0 {
		return nil, true, nil
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return []json.RawMessage{c}, false, nil
}

func (s *echoSource) partial() (int64, int64, bool) { return 0, 0, false }
func (s *echoSource) close() error                  { s.chunks = nil; return nil }

// echoFingerprint is the system_fingerprint of every echo answer.
const echoFingerprint = "tollgate-echo"
