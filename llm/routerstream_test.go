package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

func streamingOK(w http.ResponseWriter, r *http.Request) {
	sseHeaders(w)
	for _, c := range openAIChunks {
		sseWrite(w, "", c)
	}
	sseWrite(w, "", "[DONE]")
}

func (p *policy) stream(t *testing.T, ctx context.Context) (Stream, error) {
	t.Helper()
	return p.r.Stream(ctx, p.model, json.RawMessage(`{"model":"smart","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
}

func TestStreamFallsBackOnlyBeforeTheFirstChunk(t *testing.T) {
	t.Parallel()
	// Primary: 503 on the first request; drops before any chunk on the
	// second; sends one chunk then drops on the third.
	// Each request is served on a goroutine of its own: count atomically.
	var n atomic.Int32
	pu := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			openAIError(w, 503, "overloaded", "server_error", "")
		case 2:
			sseHeaders(w)
			panic(http.ErrAbortHandler)
		default:
			sseHeaders(w)
			sseWrite(w, "", openAIChunks[0])
			sseWrite(w, "", openAIChunks[1])
			panic(http.ErrAbortHandler)
		}
	})
	su := newUpstream(t, streamingOK)
	p := newPolicy(t, config.Routing{Cooldown: config.Cooldown{Failures: 100}}, time.Minute, pu, su)
	for i, class := range []string{ClassServerError, ClassConnection} {
		s, err := p.stream(t, context.Background())
		if err != nil {
			t.Fatal(err)
		}
		chunks, err := drain(t, s)
		if err != nil || len(chunks) != len(openAIChunks) || s.Provider() != "secondary" {
			t.Fatalf("request %d: %d chunks, %v, provider %s", i, len(chunks), err, s.Provider())
		}
		if a := s.Attempts(); len(a) != 1 || a[0].Class != class || a[0].Deployment() != "primary/primary-model" {
			t.Errorf("request %d attempts = %+v", i, a)
		}
		if s.Usage() != (Usage{PromptTokens: 11, CompletionTokens: 4}) || s.TimeToFirstToken() <= 0 {
			t.Errorf("usage %+v ttft %v", s.Usage(), s.TimeToFirstToken())
		}
		_ = s.Close()
	}
	// After the first chunk there is no fallback: the break reaches the caller.
	s, err := p.stream(t, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, s)
	var le *Error
	if len(chunks) != 2 || !errors.As(err, &le) || le.Class != ClassConnection || le.Deployment() != "primary/primary-model" || s.Provider() != "primary" {
		t.Fatalf("%d chunks, %v", len(chunks), err)
	}
	if su.calls() != 2 {
		t.Errorf("secondary calls = %d, want 2", su.calls())
	}
	if u := s.Usage(); !u.Estimated || u.CompletionTokens != 1 {
		t.Errorf("partial usage = %+v", u)
	}
	if got := metricValue(t, p.r.metrics.requests.WithLabelValues("smart", "primary", "primary-model", "error")); got != 1 {
		t.Errorf("broken stream requests = %v", got)
	}
	if got := metricValue(t, p.r.metrics.requests.WithLabelValues("smart", "secondary", "secondary-model", "success")); got != 2 {
		t.Errorf("successful stream requests = %v", got)
	}
	if n, err := p.reg.Gather(); err != nil || len(n) < 5 {
		t.Errorf("gathered %d metric families, %v", len(n), err)
	}
}

func TestStreamClientDisconnectCancelsUpstream(t *testing.T) {
	t.Parallel()
	upstreamGone := make(chan struct{})
	pu := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		sseWrite(w, "", openAIChunks[0])
		sseWrite(w, "", openAIChunks[1])
		<-r.Context().Done()
		close(upstreamGone)
	})
	p := newPolicy(t, config.Routing{}, time.Minute, pu)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := p.stream(t, ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	cancel() // the client went away
	<-upstreamGone
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v", err)
	}
	if u := s.Usage(); u.CompletionTokens != 1 || !u.Estimated || u.PromptTokens == 0 {
		t.Errorf("usage = %+v", u)
	}
	_ = s.Close()
	if got := metricValue(t, p.r.metrics.requests.WithLabelValues("smart", "primary", "primary-model", "canceled")); got != 1 {
		t.Errorf("canceled requests = %v", got)
	}
}

func TestStreamAllFailReturnsAttempts(t *testing.T) {
	t.Parallel()
	pu := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { openAIError(w, 502, "bad gateway", "", "") })
	p := newPolicy(t, config.Routing{MaxAttempts: 2}, time.Minute, pu)
	_, err := p.stream(t, context.Background())
	var le *Error
	if !errors.As(err, &le) || le.UpstreamStatus != 502 || len(AttemptsOf(err)) != 2 || pu.calls() != 2 {
		t.Fatalf("error %v, attempts %d, calls %d", err, len(AttemptsOf(err)), pu.calls())
	}
}

// bridge serves a Router over HTTP the way a handler would, so the official
// SDK can be the client.
func bridge(t *testing.T, r *Router, model config.Model) *openai.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var probe struct{ Stream bool }
		_ = json.Unmarshal(body, &probe)
		if !probe.Stream {
			resp, err := r.Complete(req.Context(), model, body)
			if err != nil {
				var le *Error
				errors.As(err, &le)
				w.WriteHeader(le.Status)
				_, _ = w.Write(le.OpenAIBody())
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(resp.Body)
			return
		}
		s, err := r.Stream(req.Context(), model, body)
		if err != nil {
			t.Errorf("stream: %v", err)
			w.WriteHeader(500)
			return
		}
		defer func() { _ = s.Close() }()
		sseHeaders(w)
		for {
			c, err := s.Next()
			if err != nil {
				break
			}
			if openaiwire.IsUsageChunk(c) && !openaiwire.WantsUsage(body) {
				continue
			}
			sseWrite(w, "", string(c))
		}
		sseWrite(w, "", "[DONE]")
	}))
	t.Cleanup(srv.Close)
	c := openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("tg-test"), option.WithMaxRetries(0))
	return &c
}

func TestSDKClientToolCallsThroughAnthropic(t *testing.T) {
	t.Parallel()
	var a *anthropicServer
	a = newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
		if string(a.last()["stream"]) != "true" {
			_, _ = io.WriteString(w, anthropicToolMessage)
			return
		}
		sseHeaders(w)
		for _, ev := range anthropicStream {
			sseWrite(w, ev[0], ev[1])
		}
	})
	cfg := &config.Config{Providers: []config.Provider{{Name: "claude", Kind: config.KindAnthropic, BaseURL: a.srv.URL, APIKeyEnv: "K"}}}
	r, err := NewRouter(cfg, nil, func(string) string { return anthropicKey }, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := config.Model{Name: "claude", Deployments: []config.Deployment{{Provider: "claude", Model: "claude-sonnet-4-5"}}}
	client := bridge(t, r, model)
	params := openai.ChatCompletionNewParams{
		Model: "claude",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You answer with tools."),
			openai.UserMessage("What's the weather in Paris?"),
		},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
			Name: "get_weather", Description: openai.String("Current weather"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"location": map[string]any{"type": "string"}}},
		})},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
	}
	cc, err := client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Choices) != 1 || cc.Choices[0].FinishReason != "tool_calls" || len(cc.Choices[0].Message.ToolCalls) != 1 {
		t.Fatalf("completion = %+v", cc)
	}
	call := cc.Choices[0].Message.ToolCalls[0]
	var args struct{ Location, Unit string }
	if err := json.Unmarshal([]byte(call.Function.Arguments), &args); err != nil || args.Location != "Paris" || call.Function.Name != "get_weather" {
		t.Errorf("tool call = %+v (%v)", call, err)
	}
	if cc.Usage.PromptTokens != 512 || cc.Usage.CompletionTokens != 57 {
		t.Errorf("usage = %+v", cc.Usage)
	}
	sent := a.last()
	if string(sent["system"]) != `"You answer with tools."` || string(sent["tool_choice"]) != `{"type":"any"}` ||
		string(sent["tools"]) != `[{"name":"get_weather","description":"Current weather","input_schema":{"properties":{"location":{"type":"string"}},"type":"object"}}]` {
		t.Errorf("sent system %s tool_choice %s tools %s", sent["system"], sent["tool_choice"], sent["tools"])
	}

	// The tool result goes back; this time streamed, with usage requested.
	params.Messages = append(params.Messages, cc.Choices[0].Message.ToParam(), openai.ToolMessage("18C and sunny", call.ID))
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Choices[0].Message.Content != "Okay, let me check." || len(acc.Choices[0].Message.ToolCalls) != 1 ||
		acc.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"location": "San Francisco, CA"}` || acc.Usage.TotalTokens != 561 {
		t.Errorf("accumulated = %+v usage %+v", acc.Choices[0].Message, acc.Usage)
	}
	sent = a.last()
	want := `[{"role":"user","content":[{"type":"text","text":"What's the weather in Paris?"}]},` +
		fmt.Sprintf(`{"role":"assistant","content":[{"type":"text","text":"I'll check the weather."},{"type":"tool_use","id":%q,"name":"get_weather","input":{"location":"Paris","unit":"celsius"}}]},`, call.ID) +
		fmt.Sprintf(`{"role":"user","content":[{"type":"tool_result","tool_use_id":%q,"content":"18C and sunny"}]}]`, call.ID)
	if string(sent["messages"]) != want {
		t.Errorf("messages sent =\n%s\nwant\n%s", sent["messages"], want)
	}
}
