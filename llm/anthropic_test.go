package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
)

const anthropicKey = "sk-ant-SECRET-42"

// anthropicServer is a fake Anthropic API: it checks the Messages API's
// route and headers, records the requests and answers with handler.
type anthropicServer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []map[string]json.RawMessage
}

func newAnthropicServer(t *testing.T, handler http.HandlerFunc) *anthropicServer {
	t.Helper()
	a := &anthropicServer{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
			anthropicError(w, 404, "not_found_error", "Not found: "+r.URL.Path)
			return
		}
		if r.Header.Get("x-api-key") != anthropicKey {
			anthropicError(w, 401, "authentication_error", "invalid x-api-key")
			return
		}
		if r.Header.Get("anthropic-version") != "2023-06-01" || r.Header.Get("Authorization") != "" {
			anthropicError(w, 400, "invalid_request_error", "anthropic-version: header is required")
			return
		}
		b, _ := io.ReadAll(r.Body)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			anthropicError(w, 400, "invalid_request_error", "bad json")
			return
		}
		a.mu.Lock()
		a.requests = append(a.requests, m)
		a.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *anthropicServer) calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

func (a *anthropicServer) last() map[string]json.RawMessage {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests[len(a.requests)-1]
}

func anthropicError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

// anthropicToolMessage is a Messages API response with text and a tool call.
const anthropicToolMessage = `{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [
    {"type": "text", "text": "I'll check the weather."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "Paris", "unit": "celsius"}}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 412, "output_tokens": 57, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100}
}`

func anthropicProvider(t *testing.T, a *anthropicServer) *Anthropic {
	t.Helper()
	p := NewAnthropic(config.Provider{Name: "claude", Kind: config.KindAnthropic, BaseURL: a.srv.URL, Timeout: config.Duration(time.Minute)}, anthropicKey, a.srv.Client())
	p.now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	return p
}

func TestAnthropicTranslatesRequest(t *testing.T) {
	t.Parallel()
	a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, anthropicToolMessage)
	})
	p := anthropicProvider(t, a)
	body := `{"model":"claude-sonnet-4-5","temperature":0.3,"top_p":0.9,"stop":["END"],"max_completion_tokens":300,"user":"u-1",
	"messages":[
		{"role":"system","content":"You are terse."},
		{"role":"developer","content":[{"type":"text","text":"Use tools."}]},
		{"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},
		{"role":"assistant","content":null,"tool_calls":[
			{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}},
			{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Rome\"}"}}]},
		{"role":"tool","tool_call_id":"call_1","content":"18C"},
		{"role":"tool","tool_call_id":"call_2","content":"24C"},
		{"role":"user","content":"And tomorrow?"}],
	"tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}},
		{"type":"function","function":{"name":"now"}}],
	"tool_choice":{"type":"function","function":{"name":"get_weather"}},
	"parallel_tool_calls":false}`
	if _, err := p.ChatCompletion(context.Background(), "claude-sonnet-4-5", json.RawMessage(body)); err != nil {
		t.Fatal(err)
	}
	got := a.last()
	want := map[string]string{
		"model":          `"claude-sonnet-4-5"`,
		"system":         `"You are terse.\n\nUse tools."`,
		"max_tokens":     `300`,
		"temperature":    `0.3`,
		"top_p":          `0.9`,
		"stop_sequences": `["END"]`,
		"metadata":       `{"user_id":"u-1"}`,
		"tool_choice":    `{"type":"tool","name":"get_weather","disable_parallel_tool_use":true}`,
		"tools": `[{"name":"get_weather","description":"Current weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},` +
			`{"name":"now","input_schema":{"type":"object","properties":{}}}]`,
		"messages": `[{"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},` +
			`{"role":"assistant","content":[{"type":"tool_use","id":"call_1","name":"get_weather","input":{"location":"Paris"}},{"type":"tool_use","id":"call_2","name":"get_weather","input":{"location":"Rome"}}]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1","content":"18C"},{"type":"tool_result","tool_use_id":"call_2","content":"24C"},{"type":"text","text":"And tomorrow?"}]}]`,
	}
	for k, v := range want {
		if string(got[k]) != v {
			t.Errorf("%s = %s\nwant %s", k, got[k], v)
		}
	}
	for _, k := range []string{"stream", "n", "parallel_tool_calls", "max_completion_tokens", "user", "stop"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s was sent to Anthropic: %s", k, got[k])
		}
	}
}

func TestAnthropicToolChoiceAndDefaults(t *testing.T) {
	t.Parallel()
	a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, anthropicToolMessage) })
	p := anthropicProvider(t, a)
	for choice, want := range map[string]string{`"auto"`: `{"type":"auto"}`, `"none"`: `{"type":"none"}`, `"required"`: `{"type":"any"}`} {
		body := `{"messages":[{"role":"user","content":"x"}],"stop":"STOP","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":` + choice + `}`
		if _, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(body)); err != nil {
			t.Fatal(err)
		}
		got := a.last()
		if string(got["tool_choice"]) != want || string(got["max_tokens"]) != "4096" || string(got["stop_sequences"]) != `["STOP"]` {
			t.Errorf("tool_choice %s: sent %s, max_tokens %s, stop %s", choice, got["tool_choice"], got["max_tokens"], got["stop_sequences"])
		}
	}
	// Refused rather than silently dropped.
	for name, body := range map[string]string{
		"n":               `{"n":2,"messages":[{"role":"user","content":"x"}]}`,
		"json mode":       `{"response_format":{"type":"json_object"},"messages":[{"role":"user","content":"x"}]}`,
		"bad args":        `{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`,
		"only system":     `{"messages":[{"role":"system","content":"x"}]}`,
		"tool without id": `{"messages":[{"role":"user","content":"x"},{"role":"tool","content":"r"}]}`,
	} {
		before := a.calls()
		_, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(body))
		var le *Error
		if !errors.As(err, &le) || le.Status != 400 || le.Retryable {
			t.Errorf("%s: error = %v", name, err)
		}
		if a.calls() != before {
			t.Errorf("%s: an invalid request reached the provider", name)
		}
	}
}

func TestAnthropicTranslatesResponse(t *testing.T) {
	t.Parallel()
	a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, anthropicToolMessage)
	})
	resp, err := anthropicProvider(t, a).ChatCompletion(context.Background(), "claude-sonnet-4-5",
		json.RawMessage(`{"messages":[{"role":"user","content":"Weather in Paris?"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"msg_01Aq9w938a90dw8q","object":"chat.completion","created":1700000000,"model":"claude-sonnet-4-5-20250929",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"I'll check the weather.","refusal":null,` +
		`"tool_calls":[{"id":"toolu_01A09q90qw90lq917835lq9","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris\", \"unit\": \"celsius\"}"}}]},` +
		`"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":512,"completion_tokens":57,"total_tokens":569,"prompt_tokens_details":{"cached_tokens":100}}}`
	if string(resp.Body) != want {
		t.Errorf("body =\n%s\nwant\n%s", resp.Body, want)
	}
	if resp.Usage != (Usage{PromptTokens: 512, CompletionTokens: 57}) || resp.Provider != "claude" || resp.UpstreamModel != "claude-sonnet-4-5" {
		t.Errorf("response = %+v", resp)
	}
}

func TestAnthropicStopReasons(t *testing.T) {
	t.Parallel()
	for stop, want := range map[string]string{"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"} {
		a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"hi"}],"stop_reason":%q,"usage":{"input_tokens":3,"output_tokens":1}}`, stop)
		})
		resp, err := anthropicProvider(t, a).ChatCompletion(context.Background(), "c", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		var cc struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
				Message      struct{ Content string }
			}
		}
		_ = json.Unmarshal(resp.Body, &cc)
		if cc.Choices[0].FinishReason != want || cc.Choices[0].Message.Content != "hi" {
			t.Errorf("%s: %s", stop, resp.Body)
		}
	}
}

func TestAnthropicErrorMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		status    int
		typ, msg  string
		class     string
		retryable bool
		after     time.Duration
	}{
		{"400 passes through", func(w http.ResponseWriter, r *http.Request) {
			anthropicError(w, 400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum")
		}, 400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum", ClassClientError, false, 0},
		{"413", func(w http.ResponseWriter, r *http.Request) {
			anthropicError(w, 413, "request_too_large", "Request exceeds the maximum size")
		},
			413, "invalid_request_error", "Request exceeds the maximum size", ClassClientError, false, 0},
		{"401 is our key", func(w http.ResponseWriter, r *http.Request) {
			anthropicError(w, 401, "authentication_error", "invalid x-api-key "+anthropicKey)
		}, 502, "upstream_error", "rejected Tollgate's credentials", ClassProviderAuth, true, 0},
		{"429 with retry-after", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("retry-after", "17")
			anthropicError(w, 429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")
		}, 429, "rate_limit_error", "is rate limiting", ClassRateLimited, true, 17 * time.Second},
		{"500", func(w http.ResponseWriter, r *http.Request) {
			anthropicError(w, 500, "api_error", "Internal server error")
		},
			502, "upstream_error", "failed (HTTP 500): Internal server error", ClassServerError, true, 0},
		{"529 overloaded", func(w http.ResponseWriter, r *http.Request) { anthropicError(w, 529, "overloaded_error", "Overloaded") },
			502, "upstream_error", "failed (HTTP 529): Overloaded", ClassServerError, true, 0},
		{"200 not a message", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"ok":true}`) },
			502, "upstream_error", "not a Messages API message", ClassServerError, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAnthropicServer(t, tt.handler)
			_, err := anthropicProvider(t, a).ChatCompletion(context.Background(), "c", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not *Error", err)
			}
			if le.Status != tt.status || le.Type != tt.typ || le.Class != tt.class || le.Retryable != tt.retryable || le.RetryAfter != tt.after {
				t.Errorf("error = %+v", le)
			}
			if !strings.Contains(le.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", le.Message, tt.msg)
			}
			if strings.Contains(le.Error(), anthropicKey) {
				t.Error("the API key leaked")
			}
		})
	}
}
