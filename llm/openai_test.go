package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

const testKey = "sk-test-SECRET-0123456789"

// completionJSON is a chat.completion as OpenAI sends it.
const completionJSON = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
  "service_tier": "default",
  "system_fingerprint": "fp_06737a9306"
}`

func openAIError(w http.ResponseWriter, status int, msg, typ, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}})
}

func newProvider(t *testing.T, h http.HandlerFunc, timeout time.Duration) *OpenAI {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return NewOpenAI(config.Provider{Name: "up", Kind: config.KindOpenAI, BaseURL: srv.URL + "/v1/", Timeout: config.Duration(timeout)}, testKey, srv.Client())
}

func TestOpenAIRequestAndResponse(t *testing.T) {
	t.Parallel()
	var got struct {
		path, auth, ctype string
		body              map[string]json.RawMessage
	}
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		got.path, got.auth, got.ctype = r.Method+" "+r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got.body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, completionJSON)
	}, time.Minute)
	sent := json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`)
	resp, err := p.ChatCompletion(context.Background(), "gpt-4o-mini", sent)
	if err != nil {
		t.Fatal(err)
	}
	if got.path != "POST /v1/chat/completions" || got.auth != "Bearer "+testKey || got.ctype != "application/json" {
		t.Errorf("request = %+v", got)
	}
	if string(got.body["temperature"]) != "0.2" || !strings.Contains(string(got.body["tools"]), `"name":"f"`) {
		t.Errorf("body not passed through: %s", got.body)
	}
	if string(resp.Body) != completionJSON {
		t.Error("response body was altered")
	}
	if resp.Usage != (Usage{PromptTokens: 19, CompletionTokens: 10}) || resp.Provider != "up" || resp.UpstreamModel != "gpt-4o-mini" {
		t.Errorf("response = %+v", resp)
	}
}

func TestOpenAINoKeyNoAuthHeader(t *testing.T) {
	t.Parallel()
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Values("Authorization"))
		_, _ = io.WriteString(w, completionJSON)
	}))
	defer srv.Close()
	p := NewOpenAI(config.Provider{Name: "local", BaseURL: srv.URL}, "", nil)
	if _, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(`{"model":"m","messages":[]}`)); err != nil {
		t.Fatal(err)
	}
	if v := auth.Load().([]string); len(v) != 0 {
		t.Errorf("Authorization sent without a key: %v", v)
	}
}

func TestOpenAIMissingUsageIsEstimated(t *testing.T) {
	t.Parallel()
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there!"},"finish_reason":"stop"}]}`)
	}, time.Minute)
	sent := json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"Say hello"}]}`)
	resp, err := p.ChatCompletion(context.Background(), "m", sent)
	if err != nil {
		t.Fatal(err)
	}
	// prompt: 3 + 4 + "user"(1) + "Say hello"(2); completion: "Hello", " there", "!"
	if resp.Usage != (Usage{PromptTokens: 10, CompletionTokens: 3, Estimated: true}) {
		t.Fatalf("usage = %+v", resp.Usage)
	}
	// usage: null is the same as missing.
	p = newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"choices":[{"message":{"role":"assistant","content":"ok"}}],"usage":null}`)
	}, time.Minute)
	resp, err = p.ChatCompletion(context.Background(), "m", sent)
	if err != nil || !resp.Usage.Estimated || resp.Usage.CompletionTokens != 1 {
		t.Fatalf("null usage: %+v, %v", resp, err)
	}
}

func TestOpenAIErrorMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		status    int
		typ       string
		code      string
		msg       string
		retryable bool
	}{
		{"400 passes through", func(w http.ResponseWriter, r *http.Request) {
			openAIError(w, 400, "Invalid value for 'temperature': must be <= 2.", "invalid_request_error", "invalid_value")
		}, 400, "invalid_request_error", "invalid_value", "Invalid value for 'temperature': must be <= 2.", false},
		{"404 passes through", func(w http.ResponseWriter, r *http.Request) {
			openAIError(w, 404, "The model `gpt-9` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found")
		}, 404, "invalid_request_error", "model_not_found", "The model `gpt-9` does not exist", false},
		{"422 without body", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(422) },
			422, "invalid_request_error", "", `provider "up" rejected the request (HTTP 422 Unprocessable Entity)`, false},
		{"401 is our key", func(w http.ResponseWriter, r *http.Request) {
			openAIError(w, 401, "Incorrect API key provided: "+testKey+". You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")
		}, 502, "upstream_error", "", `provider "up" rejected Tollgate's credentials (HTTP 401)`, true},
		{"403 is our key", func(w http.ResponseWriter, r *http.Request) { openAIError(w, 403, "forbidden "+testKey, "", "") },
			502, "upstream_error", "", "rejected Tollgate's credentials (HTTP 403)", true},
		{"429 retryable", func(w http.ResponseWriter, r *http.Request) {
			openAIError(w, 429, "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min", "tokens", "rate_limit_exceeded")
		}, 429, "rate_limit_error", "rate_limit_exceeded", `provider "up" is rate limiting requests`, true},
		{"500 retryable", func(w http.ResponseWriter, r *http.Request) {
			openAIError(w, 500, "The server had an error while processing your request.", "server_error", "")
		}, 502, "upstream_error", "", `provider "up" failed (HTTP 500): The server had an error`, true},
		{"503 html body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			_, _ = io.WriteString(w, "<html>Service Unavailable</html>")
		}, 502, "upstream_error", "", `provider "up" failed (HTTP 503)`, true},
		{"200 garbage", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<html>proxy login</html>") },
			502, "upstream_error", "", "not a JSON object", true},
		{"200 without choices", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"object":"list","data":[]}`) },
			502, "upstream_error", "", `missing "choices" array`, true},
		{"200 array", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `[1,2]`) },
			502, "upstream_error", "", "not a JSON object", true},
		{"200 bad usage", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"choices":[],"usage":"lots"}`)
		},
			502, "upstream_error", "", `"usage" is not an object`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProvider(t, tt.handler, time.Minute)
			_, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(`{"model":"m","messages":[]}`))
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not *Error", err)
			}
			if le.Status != tt.status || le.Type != tt.typ || le.Code != tt.code || le.Retryable != tt.retryable || le.Provider != "up" {
				t.Errorf("error = %+v", le)
			}
			if !strings.Contains(le.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", le.Message, tt.msg)
			}
			if strings.Contains(le.Error(), testKey) || strings.Contains(string(le.OpenAIBody()), testKey) {
				t.Errorf("the API key leaked: %s", le.Error())
			}
		})
	}
}

func TestOpenAIScrubsKeyFromClientErrors(t *testing.T) {
	t.Parallel()
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 400, "bad header Bearer "+testKey, "invalid_request_error", "")
	}, time.Minute)
	_, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(`{}`))
	var le *Error
	if !errors.As(err, &le) || le.Message != "bad header Bearer [redacted]" {
		t.Fatalf("error = %v", err)
	}
}

func TestOpenAITimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // the server notices a client hang-up only once the body is read
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, 50*time.Millisecond)
	_, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(`{}`))
	var le *Error
	if !errors.As(err, &le) || le.Status != 504 || le.Type != openaiwire.TypeTimeout || !le.Retryable {
		t.Fatalf("error = %#v", err)
	}
}

func TestOpenAICallerCanceledIsNotAProviderError(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := p.ChatCompletion(ctx, "m", json.RawMessage(`{}`))
	var le *Error
	if errors.As(err, &le) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %#v", err)
	}
}

func TestOpenAIConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p := NewOpenAI(config.Provider{Name: "down", BaseURL: "http://" + addr + "/v1"}, testKey, nil)
	_, err = p.ChatCompletion(context.Background(), "m", json.RawMessage(`{}`))
	var le *Error
	if !errors.As(err, &le) || le.Status != 502 || le.Type != openaiwire.TypeUpstream || !le.Retryable || strings.Contains(le.Message, addr) {
		t.Fatalf("error = %#v", err)
	}
}

func TestOpenAIBodyTooLarge(t *testing.T) {
	t.Parallel()
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"choices":[],"pad":"`)
		_, _ = io.WriteString(w, strings.Repeat("x", MaxResponseBytes))
		_, _ = io.WriteString(w, `"}`)
	}, time.Minute)
	_, err := p.ChatCompletion(context.Background(), "m", json.RawMessage(`{}`))
	var le *Error
	if !errors.As(err, &le) || le.Status != 502 || !strings.Contains(le.Message, "larger than") {
		t.Fatalf("error = %v", err)
	}
}

func TestErrorFormats(t *testing.T) {
	t.Parallel()
	e := &Error{Status: 502, Type: openaiwire.TypeUpstream, Code: "x", Message: "boom", Provider: "p", UpstreamStatus: 503}
	if got := e.Error(); got != `llm provider "p": upstream_error (HTTP 502, upstream 503) [x]: boom` {
		t.Errorf("Error() = %q", got)
	}
	if got := string(e.OpenAIBody()); got != `{"error":{"code":"x","message":"boom","param":null,"type":"upstream_error"}}` {
		t.Errorf("OpenAIBody() = %s", got)
	}
}

// TestOpenAIRedirectNotFollowed: a provider's redirect is answered as the
// misconfiguration it is (502 naming the status), not followed: the
// redirect's target never gets the request nor the key.
func TestOpenAIRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	var followed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, completionJSON)
	}))
	t.Cleanup(target.Close)
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/v1/chat/completions", status)
		}, time.Minute)
		_, err := p.ChatCompletion(context.Background(), "gpt-4o-mini", json.RawMessage(`{"messages":[{"role":"user","content":"hi"}]}`))
		var le *Error
		if !errors.As(err, &le) || le.Status != http.StatusBadGateway || le.UpstreamStatus != status || !strings.Contains(le.Message, "unexpected HTTP") {
			t.Errorf("HTTP %d: err = %v, want a 502 naming the status", status, err)
		}
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}
