package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// openAIChunks are chat.completion.chunk events as OpenAI streams them
// with stream_options.include_usage.
var openAIChunks = []string{
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" there, friend"},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`,
}

// sseWrite writes one SSE event and flushes it.
func sseWrite(w http.ResponseWriter, event, data string) {
	if event != "" {
		fmt.Fprintf(w, "event: %s\n", event)
	}
	fmt.Fprintf(w, "data: %s\n\n", data)
	w.(http.Flusher).Flush()
}

func sseHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}

// drain reads a stream to its end.
func drain(t *testing.T, s Stream) ([]json.RawMessage, error) {
	t.Helper()
	var out []json.RawMessage
	for {
		c, err := s.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, c)
	}
}

func TestOpenAIStreamPassesChunksThrough(t *testing.T) {
	t.Parallel()
	var sent map[string]json.RawMessage
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &sent)
		if r.Header.Get("Accept") != "text/event-stream" {
			openAIError(w, 400, "accept", "", "")
			return
		}
		sseHeaders(w)
		_, _ = io.WriteString(w, ": keep-alive comment\n\n")
		for _, c := range openAIChunks {
			time.Sleep(2 * time.Millisecond) // scripted latency between tokens
			sseWrite(w, "", c)
		}
		sseWrite(w, "", "[DONE]")
	}, time.Minute)
	body := json.RawMessage(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_obfuscation":false},"messages":[{"role":"user","content":"hi"}]}`)
	s, err := p.ChatCompletionStream(context.Background(), "gpt-4o-mini", body)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if s.TimeToFirstToken() != 0 {
		t.Error("time to first token before any chunk")
	}
	chunks, err := drain(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != len(openAIChunks) {
		t.Fatalf("got %d chunks", len(chunks))
	}
	for i := range chunks {
		if string(chunks[i]) != openAIChunks[i] {
			t.Errorf("chunk %d altered:\n%s", i, chunks[i])
		}
	}
	if string(sent["stream_options"]) != `{"include_obfuscation":false,"include_usage":true}` || string(sent["stream"]) != "true" {
		t.Errorf("stream_options sent = %s, stream %s", sent["stream_options"], sent["stream"])
	}
	if s.Usage() != (Usage{PromptTokens: 11, CompletionTokens: 4}) {
		t.Errorf("usage = %+v", s.Usage())
	}
	if s.TimeToFirstToken() <= 0 || s.Provider() != "up" || s.UpstreamModel() != "gpt-4o-mini" {
		t.Errorf("ttft %v provider %q model %q", s.TimeToFirstToken(), s.Provider(), s.UpstreamModel())
	}
	if !openaiwire.IsUsageChunk(chunks[4]) || openaiwire.IsUsageChunk(chunks[3]) || openaiwire.IsUsageChunk(chunks[0]) {
		t.Error("IsUsageChunk misclassifies")
	}
	if openaiwire.WantsUsage(body) || !openaiwire.WantsUsage(json.RawMessage(`{"stream_options":{"include_usage":true}}`)) {
		t.Error("ClientWantsUsage misreads stream_options")
	}
}

func TestOpenAIStreamDroppedConnectionBillsPartialOutput(t *testing.T) {
	t.Parallel()
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		sseWrite(w, "", openAIChunks[0])
		sseWrite(w, "", openAIChunks[1])
		sseWrite(w, "", openAIChunks[2])
		panic(http.ErrAbortHandler) // the connection drops mid-stream
	}, time.Minute)
	body := json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"Say hello"}]}`)
	s, err := p.ChatCompletionStream(context.Background(), "m", body)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, s)
	var le *Error
	if len(chunks) != 3 || !errors.As(err, &le) || le.Class != ClassConnection || !le.Retryable {
		t.Fatalf("%d chunks, error %v", len(chunks), err)
	}
	prompt, _ := CountPromptTokens(body)
	// "Hello there, friend" counted by Tollgate: Hello, " there", ",", " friend".
	if u := s.Usage(); u != (Usage{PromptTokens: prompt, CompletionTokens: 4, Estimated: true}) {
		t.Errorf("usage = %+v", u)
	}
	_ = s.Close()
	if u := s.Usage(); u.CompletionTokens != 4 {
		t.Errorf("usage after close = %+v", u)
	}
}

func TestOpenAIStreamIdleTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		sseWrite(w, "", openAIChunks[0])
		sseWrite(w, "", openAIChunks[1])
		select { // hang without closing
		case <-release:
		case <-r.Context().Done():
		}
	}, 50*time.Millisecond)
	s, err := p.ChatCompletionStream(context.Background(), "m", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	chunks, err := drain(t, s)
	var le *Error
	if len(chunks) != 2 || !errors.As(err, &le) || le.Class != ClassTimeout || le.Status != 504 {
		t.Fatalf("%d chunks, error %v", len(chunks), err)
	}
	if u := s.Usage(); u.CompletionTokens != 1 || !u.Estimated {
		t.Errorf("usage = %+v", u)
	}
}

func TestOpenAIStreamErrorsBeforeStreaming(t *testing.T) {
	t.Parallel()
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		openAIError(w, 429, "slow down", "requests", "rate_limit_exceeded")
	}, time.Minute)
	_, err := p.ChatCompletionStream(context.Background(), "m", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	var le *Error
	if !errors.As(err, &le) || le.Status != 429 || le.RetryAfter != 3*time.Second || le.Class != ClassRateLimited {
		t.Fatalf("error = %v", err)
	}
	// A server that ignores stream: true.
	p = newProvider(t, ok, time.Minute)
	_, err = p.ChatCompletionStream(context.Background(), "m", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	if !errors.As(err, &le) || le.Class != ClassServerError || !strings.Contains(le.Message, "asked for a stream") {
		t.Fatalf("error = %v", err)
	}
	// An error event inside the stream.
	p = newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		sseWrite(w, "", openAIChunks[0])
		sseWrite(w, "", `{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}`)
	}, time.Minute)
	s, err := p.ChatCompletionStream(context.Background(), "m", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, s)
	if len(chunks) != 1 || !errors.As(err, &le) || !strings.Contains(le.Message, "during the stream: The server had an error") {
		t.Fatalf("%d chunks, error %v", len(chunks), err)
	}
}

// anthropicStream is a Messages API stream with text and a tool call, as
// Anthropic sends it (including a ping).
var anthropicStream = [][2]string{
	{"message_start", `{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}`},
	{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
	{"ping", `{"type": "ping"}`},
	{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let me"}}`},
	{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check."}}`},
	{"content_block_stop", `{"type":"content_block_stop","index":0}`},
	{"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}`},
	{"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}`},
	{"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}`},
	{"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}`},
	{"content_block_stop", `{"type":"content_block_stop","index":1}`},
	{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}`},
	{"message_stop", `{"type":"message_stop"}`},
}

func TestAnthropicStreamTranslatesEvents(t *testing.T) {
	t.Parallel()
	a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		for _, ev := range anthropicStream {
			sseWrite(w, ev[0], ev[1])
		}
	})
	p := anthropicProvider(t, a)
	var tick atomic.Int64 // a clock that advances a millisecond per reading
	p.now = func() time.Time { return time.Unix(1_700_000_000, tick.Add(1)*int64(time.Millisecond)) }
	s, err := p.ChatCompletionStream(context.Background(), "claude-sonnet-4-5",
		json.RawMessage(`{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Weather in SF?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	chunks, err := drain(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.last(); string(got["stream"]) != "true" || got["stream_options"] != nil {
		t.Errorf("sent stream %s, stream_options %s", got["stream"], got["stream_options"])
	}
	// Decode every chunk as the official SDK does and accumulate them.
	var acc openai.ChatCompletionAccumulator
	for i, c := range chunks {
		var chunk openai.ChatCompletionChunk
		if err := json.Unmarshal(c, &chunk); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if chunk.Object != "chat.completion.chunk" || chunk.ID != "msg_014p7gG3wDgGV9EUtLvnow3U" || chunk.Model != "claude-sonnet-4-5-20250929" {
			t.Errorf("chunk %d header: %s", i, c)
		}
		if !acc.AddChunk(chunk) {
			t.Fatalf("accumulator rejected chunk %d: %s", i, c)
		}
	}
	wantChunks := []string{
		`{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1700000000,"id":"msg_014p7gG3wDgGV9EUtLvnow3U","model":"claude-sonnet-4-5-20250929","object":"chat.completion.chunk"}`,
		`{"choices":[{"delta":{"content":"Okay, let me"},"finish_reason":null,"index":0,"logprobs":null}],"created":1700000000,"id":"msg_014p7gG3wDgGV9EUtLvnow3U","model":"claude-sonnet-4-5-20250929","object":"chat.completion.chunk"}`,
	}
	for i, w := range wantChunks {
		if string(chunks[i]) != w {
			t.Errorf("chunk %d = %s", i, chunks[i])
		}
	}
	if len(acc.Choices) != 1 {
		t.Fatalf("choices = %+v", acc.Choices)
	}
	msg := acc.Choices[0].Message
	if msg.Content != "Okay, let me check." || acc.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("content %q finish %q", msg.Content, acc.Choices[0].FinishReason)
	}
	if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].ID != "toolu_01T1x1fJ34qAmk2tNTrN7Up6" || msg.ToolCalls[0].Function.Name != "get_weather" ||
		msg.ToolCalls[0].Function.Arguments != `{"location": "San Francisco, CA"}` {
		t.Errorf("tool calls = %+v", msg.ToolCalls)
	}
	if acc.Usage.PromptTokens != 472 || acc.Usage.CompletionTokens != 89 || acc.Usage.TotalTokens != 561 {
		t.Errorf("SDK usage = %+v", acc.Usage)
	}
	last := chunks[len(chunks)-1]
	if !openaiwire.IsUsageChunk(last) {
		t.Errorf("last chunk is not the usage chunk: %s", last)
	}
	if s.Usage() != (Usage{PromptTokens: 472, CompletionTokens: 89}) || s.TimeToFirstToken() <= 0 {
		t.Errorf("usage %+v ttft %v", s.Usage(), s.TimeToFirstToken())
	}
}

func TestAnthropicStreamBrokenAndErrorEvents(t *testing.T) {
	t.Parallel()
	// Cut after two text deltas: the provider's input count, Tollgate's output count.
	a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		for _, ev := range anthropicStream[:5] {
			sseWrite(w, ev[0], ev[1])
		}
		panic(http.ErrAbortHandler)
	})
	s, err := anthropicProvider(t, a).ChatCompletionStream(context.Background(), "c", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, s)
	var le *Error
	if len(chunks) != 3 || !errors.As(err, &le) || le.Class != ClassConnection {
		t.Fatalf("%d chunks, error %v", len(chunks), err)
	}
	// "Okay, let me check." = Okay , " let" " me" " check" "." = 6 tokens.
	if u := s.Usage(); u != (Usage{PromptTokens: 472, CompletionTokens: 6, Estimated: true}) {
		t.Errorf("usage = %+v", u)
	}

	// An overloaded error event mid-stream.
	a = newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		sseWrite(w, anthropicStream[0][0], anthropicStream[0][1])
		sseWrite(w, "error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
	})
	s, err = anthropicProvider(t, a).ChatCompletionStream(context.Background(), "c", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	chunks, err = drain(t, s)
	if len(chunks) != 1 || !errors.As(err, &le) || !le.Retryable || le.UpstreamStatus != 529 || !strings.Contains(le.Message, "Overloaded") {
		t.Fatalf("%d chunks, error %v", len(chunks), err)
	}
}

func TestEchoStreamsWordByWord(t *testing.T) {
	t.Parallel()
	e := fixedEcho()
	body := json.RawMessage(`{"model":"echo","stream":true,"messages":[{"role":"user","content":"Hello, streaming world!"}]}`)
	s, err := e.ChatCompletionStream(context.Background(), "echo", body)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, s)
	if err != nil {
		t.Fatal(err)
	}
	var acc openai.ChatCompletionAccumulator
	var words []string
	for _, c := range chunks {
		var chunk openai.ChatCompletionChunk
		if err := json.Unmarshal(c, &chunk); err != nil {
			t.Fatal(err)
		}
		if len(chunk.Choices) == 1 && chunk.Choices[0].Delta.Content != "" {
			words = append(words, chunk.Choices[0].Delta.Content)
		}
		acc.AddChunk(chunk)
	}
	if strings.Join(words, "|") != "Hello|,| streaming| world|!" {
		t.Errorf("words = %q", words)
	}
	plain, err := e.ChatCompletion(context.Background(), "echo", body)
	if err != nil {
		t.Fatal(err)
	}
	// Streamed and plain agree: same text, same id, same honest usage.
	if acc.Choices[0].Message.Content != "Hello, streaming world!" || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("accumulated %+v", acc.Choices[0])
	}
	if s.Usage() != plain.Usage || plain.Usage.CompletionTokens != int64(len(words)) || s.Usage().Estimated {
		t.Errorf("stream usage %+v, plain %+v", s.Usage(), plain.Usage)
	}
	var pc openai.ChatCompletion
	_ = json.Unmarshal(plain.Body, &pc)
	if acc.ID != pc.ID || acc.Usage.TotalTokens != pc.Usage.TotalTokens {
		t.Errorf("ids %q %q, usage %+v %+v", acc.ID, pc.ID, acc.Usage, pc.Usage)
	}
}

func TestEchoStreamStopsWhenCallerGone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := fixedEcho().ChatCompletionStream(ctx, "echo", json.RawMessage(`{"messages":[{"role":"user","content":"one two three four"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // role chunk, "one"
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v", err)
	}
	if u := s.Usage(); u.CompletionTokens != 1 || !u.Estimated {
		t.Errorf("partial usage = %+v", u)
	}
}

func TestAzureOpenAI(t *testing.T) {
	t.Parallel()
	var path, query, apiKey, auth string
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		path, query, apiKey, auth = r.URL.Path, r.URL.RawQuery, r.Header.Get("api-key"), r.Header.Get("Authorization")
		_, _ = io.WriteString(w, completionJSON)
	}, time.Minute)
	p.apiVersion = "2024-10-21"
	p.base = strings.TrimSuffix(p.base, "/v1")
	if _, err := p.ChatCompletion(context.Background(), "my gpt4o deployment", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`)); err != nil {
		t.Fatal(err)
	}
	if path != "/openai/deployments/my gpt4o deployment/chat/completions" || query != "api-version=2024-10-21" || apiKey != testKey || auth != "" {
		t.Errorf("path %q query %q api-key %q auth %q", path, query, apiKey, auth)
	}
	// Through config, as an operator writes it.
	cfg := config.Provider{Name: "azure", Kind: config.KindOpenAI, BaseURL: "https://res.openai.azure.com/", APIVersion: "2024-10-21"}
	if !cfg.IsAzure() {
		t.Fatal("IsAzure")
	}
	u, h, _ := NewOpenAI(cfg, "k", nil).endpoint("gpt-4o")
	if u != "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" || h.Get("api-key") != "k" {
		t.Errorf("endpoint %q %v", u, h)
	}
}
