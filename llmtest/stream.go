package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Stream is a streamed answer in OpenAI's wire format: the words, one
// chunk each after Gap, then the finish chunk, a usage chunk when the
// request asked for it (stream_options.include_usage), and [DONE].
type Stream struct {
	Words []string
	// Gap is the pause before each word (a func, so a test may change it
	// while streams run).
	Gap func() time.Duration
	// PromptTokens and CompletionTokens are what the usage chunk reports.
	PromptTokens, CompletionTokens int
}

// Write answers the decoded request body as an OpenAI provider streams. It
// stops when the client goes away.
func (s Stream) Write(w http.ResponseWriter, r *http.Request, body map[string]any) {
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	send := func(v any) bool {
		raw, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", raw); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": body["model"],
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}}
	}
	if !send(chunk(map[string]any{"role": "assistant", "content": ""}, nil)) {
		return
	}
	for _, word := range s.Words {
		if s.Gap != nil {
			select {
			case <-time.After(s.Gap()):
			case <-r.Context().Done():
				return
			}
		}
		if !send(chunk(map[string]any{"content": word}, nil)) {
			return
		}
	}
	send(chunk(map[string]any{}, "stop"))
	if opts, _ := body["stream_options"].(map[string]any); opts["include_usage"] == true {
		send(map[string]any{"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": body["model"],
			"choices": []any{}, "usage": map[string]int{"prompt_tokens": s.PromptTokens, "completion_tokens": s.CompletionTokens,
				"total_tokens": s.PromptTokens + s.CompletionTokens}})
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}
