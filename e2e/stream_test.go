package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llmtest"
)

// streamWords are what the fake upstream streams, one chunk each.
var streamWords = []string{"Hello", " from", " a", " streaming", " upstream"}

// stream answers an OpenAI streaming request as OpenAI does: SSE chunks,
// a usage chunk when stream_options.include_usage, then [DONE].
func (u *upstream) stream(w http.ResponseWriter, r *http.Request, body map[string]any) {
	llmtest.Stream{Words: streamWords, Gap: func() time.Duration { return time.Duration(u.streamGap.Load()) },
		PromptTokens: upstreamPrompt, CompletionTokens: len(streamWords)}.Write(w, r, body)
}

// Streaming through the official SDK, fallback past a broken deployment
// with every attempt in the job's timeline, and a client that hangs up
// mid-stream still billed for what was generated.
func TestEndToEndStreamingAndFallback(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	_, acc, _ := e.do("POST", "/v1/admin/accounts", e.admin, map[string]string{"name": "Streamer", "email": "s@acme.test", "plan": "free"})
	_, key, _ := e.do("POST", "/v1/admin/accounts/"+acc["id"].(string)+"/keys", e.admin, map[string]string{"name": "s"})
	secret := key["key"].(string)
	client := openai.NewClient(option.WithBaseURL(e.base+"/v1/"), option.WithAPIKey(secret), option.WithMaxRetries(0))
	ctx := context.Background()

	// A stream cannot be queued.
	if code, body, _ := e.do("POST", "/v1/chat/completions", secret, []byte(`{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"x"}]}`),
		"Prefer", "respond-async"); code != 400 || body["error"].(map[string]any)["code"] != "unsupported_parameter" {
		t.Fatalf("queued stream: %d %v", code, body)
	}

	// 1. A stream with usage, through the SDK.
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "gpt-test",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream please")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc2 openai.ChatCompletionAccumulator
	var id string
	for stream.Next() {
		chunk := stream.Current()
		acc2.AddChunk(chunk)
		id = chunk.ID
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc2.Choices[0].Message.Content; got != strings.Join(streamWords, "") {
		t.Fatalf("streamed content %q", got)
	}
	if acc2.Usage.PromptTokens != upstreamPrompt || acc2.Usage.CompletionTokens != int64(len(streamWords)) {
		t.Fatalf("streamed usage %+v", acc2.Usage)
	}
	if !strings.HasPrefix(id, "chatcmpl-") || id == "chatcmpl-up" {
		t.Fatalf("chunk id %q: want Tollgate's completion id", id)
	}
	succeeded := waitSucceeded(t, e, id)
	if !succeeded.Stream || succeeded.Usage.TotalTokens != int64(upstreamPrompt+len(streamWords)) || succeeded.CostNanoUSD != upstreamPrompt*2500+int64(len(streamWords))*10000 {
		t.Fatalf("recorded stream %+v", succeeded)
	}

	// 2. Without include_usage the client gets no usage chunk, and the
	// stream is still billed.
	stream = client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("no usage")},
	})
	for stream.Next() {
		if c := stream.Current(); c.Usage.TotalTokens != 0 {
			t.Fatalf("usage chunk sent to a client that did not ask: %+v", c.Usage)
		}
		id = stream.Current().ID
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if s := waitSucceeded(t, e, id); s.CostNanoUSD == 0 {
		t.Fatalf("a stream recorded at zero cost: %+v", s)
	}

	// 3. Fallback: the first deployment answers 503; the client gets the
	// second's answer and the timeline shows the failed attempts.
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-fallback",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("fall back")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != "Hello from upstream" {
		t.Fatalf("fallback answer %+v", resp)
	}
	code, timeline, _ := e.do("GET", "/v1/jobs/"+resp.ID+"/events", secret, nil)
	if code != 200 {
		t.Fatalf("timeline: %d %v", code, timeline)
	}
	var types []string
	var failedAttempts int
	for _, raw := range timeline["data"].([]any) {
		ev := raw.(map[string]any)
		types = append(types, ev["type"].(string))
		if ev["type"] == events.TypeCompletionAttemptFailed {
			failedAttempts++
			d := ev["data"].(map[string]any)
			if d["upstream_model"] != "upstream-broken" || d["status"] != float64(503) || d["retryable"] != true {
				t.Errorf("attempt %v", d)
			}
		}
	}
	if failedAttempts == 0 || types[0] != events.TypeCompletionRequested || !contains(types, events.TypeCompletionSucceeded) {
		t.Fatalf("timeline %v", types)
	}

	// 4. A client that hangs up mid-stream: the upstream call is cancelled
	// and what was generated is recorded and billed.
	e.up.streamGap.Store(int64(200 * time.Millisecond))
	defer e.up.streamGap.Store(0)
	rctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(rctx, "POST", e.base+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hang up on me"}]}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	hresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(hresp.Body)
	var partialID string
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: {") {
			continue
		}
		var c struct {
			ID      string `json:"id"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &c); err != nil {
			t.Fatal(err)
		}
		partialID = c.ID
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			break // one word, then hang up
		}
	}
	cancel()
	hresp.Body.Close()
	partial := waitSucceeded(t, e, partialID)
	if partial.Interrupted != "client_disconnected" || partial.Usage.CompletionTokens == 0 || partial.CostNanoUSD == 0 {
		t.Fatalf("interrupted stream recorded as %+v", partial)
	}
	if partial.Usage.CompletionTokens >= int64(len(streamWords)) {
		t.Errorf("billed %d completion tokens for a stream cut after one word", partial.Usage.CompletionTokens)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// waitSucceeded returns the completion.succeeded event of a completion.
func waitSucceeded(t *testing.T, e *env, id string) events.CompletionSucceeded {
	t.Helper()
	var out events.CompletionSucceeded
	eventually(t, "completion "+id+" recorded", func() error {
		evs, err := e.store.Load(context.Background(), "completion-"+id)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Type == events.TypeCompletionSucceeded {
				return json.Unmarshal(ev.Data, &out)
			}
		}
		return fmt.Errorf("%d events, none succeeded", len(evs))
	})
	return out
}
