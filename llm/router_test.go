package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/money"
)

// upstream is an OpenAI-compatible test server that records what it received.
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []map[string]json.RawMessage
	auths  []string
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
			openAIError(w, 404, "unknown route "+r.URL.Path, "invalid_request_error", "")
			return
		}
		b, _ := io.ReadAll(r.Body)
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		u.mu.Lock()
		u.bodies = append(u.bodies, m)
		u.auths = append(u.auths, r.Header.Get("Authorization"))
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.bodies)
}

func ok(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, completionJSON) }

func routerFor(t *testing.T, primary, secondary *upstream) (*Router, config.Model) {
	t.Helper()
	cfg := &config.Config{
		Providers: []config.Provider{
			{Name: "primary", Kind: config.KindOpenAI, BaseURL: primary.srv.URL + "/v1", APIKeyEnv: "PRIMARY_KEY"},
			{Name: "secondary", Kind: config.KindOpenAI, BaseURL: secondary.srv.URL + "/v1"},
			{Name: "echo", Kind: config.KindEcho},
		},
		Models: []config.Model{{
			Name: "smart",
			Deployments: []config.Deployment{
				{Provider: "primary", Model: "gpt-4o-mini"},
				{Provider: "secondary", Model: "llama3.1:8b"},
			},
			Price: money.Price{InputPerMillion: 150_000_000, OutputPerMillion: 600_000_000}, // 0.15 and 0.60 USD per million tokens
		}},
	}
	getenv := func(k string) string {
		if k == "PRIMARY_KEY" {
			return "sk-primary"
		}
		return ""
	}
	// No real waiting and no randomness: backoffs are recorded, not slept.
	r, err := NewRouter(cfg, nil, getenv, nil, WithSleep(func(context.Context, time.Duration) error { return nil }), WithRand(func() float64 { return 0.5 }))
	if err != nil {
		t.Fatal(err)
	}
	return r, cfg.Models[0]
}

const clientBody = `{"model":"smart","messages":[{"role":"user","content":"hi <b>"}],"response_format":{"type":"json_object"},"tools":[{"type":"function","function":{"name":"f"}}],"stream":true,"stream_options":{"include_usage":true}}`

func TestRouterRewritesModelAndKeepsFields(t *testing.T) {
	t.Parallel()
	primary, secondary := newUpstream(t, ok), newUpstream(t, ok)
	r, model := routerFor(t, primary, secondary)
	resp, err := r.Complete(context.Background(), model, json.RawMessage(clientBody))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Provider != "primary" || resp.UpstreamModel != "gpt-4o-mini" || len(resp.Attempts) != 0 {
		t.Errorf("response = %+v", resp)
	}
	if primary.calls() != 1 || secondary.calls() != 0 {
		t.Fatalf("calls = %d, %d", primary.calls(), secondary.calls())
	}
	got := primary.bodies[0]
	if string(got["model"]) != `"gpt-4o-mini"` {
		t.Errorf("model = %s", got["model"])
	}
	if string(got["response_format"]) != `{"type":"json_object"}` ||
		string(got["tools"]) != `[{"type":"function","function":{"name":"f"}}]` ||
		string(got["messages"]) != `[{"role":"user","content":"hi <b>"}]` {
		t.Errorf("fields altered: %s", got)
	}
	if _, ok := got["stream"]; ok {
		t.Error("stream was forwarded to a non-streaming call")
	}
	if _, ok := got["stream_options"]; ok {
		t.Error("stream_options was forwarded")
	}
	if primary.auths[0] != "Bearer sk-primary" {
		t.Errorf("auth = %q", primary.auths[0])
	}
}

func TestRouterFallsBackOn503(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 503, "overloaded", "server_error", "")
	})
	secondary := newUpstream(t, ok)
	r, model := routerFor(t, primary, secondary)
	resp, err := r.Complete(context.Background(), model, json.RawMessage(clientBody))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Provider != "secondary" || resp.UpstreamModel != "llama3.1:8b" {
		t.Errorf("answered by %s/%s", resp.Provider, resp.UpstreamModel)
	}
	if len(resp.Attempts) != 1 || resp.Attempts[0].Provider != "primary" || resp.Attempts[0].UpstreamStatus != 503 {
		t.Errorf("attempts = %+v", resp.Attempts)
	}
	if string(secondary.bodies[0]["model"]) != `"llama3.1:8b"` {
		t.Errorf("secondary model = %s", secondary.bodies[0]["model"])
	}
	if secondary.auths[0] != "" {
		t.Errorf("secondary got auth %q without a key configured", secondary.auths[0])
	}
}

func TestRouterDoesNotFallBackOn400(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 400, "'messages' must contain the word 'json' in some form", "invalid_request_error", "")
	})
	secondary := newUpstream(t, ok)
	r, model := routerFor(t, primary, secondary)
	_, err := r.Complete(context.Background(), model, json.RawMessage(clientBody))
	var le *Error
	if !errors.As(err, &le) || le.Status != 400 || le.Message != "'messages' must contain the word 'json' in some form" {
		t.Fatalf("error = %v", err)
	}
	if secondary.calls() != 0 {
		t.Fatal("fell back on a client error")
	}
}

func TestRouterReturnsLastErrorWhenAllFail(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { openAIError(w, 500, "a", "server_error", "") })
	secondary := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 429, "b", "tokens", "rate_limit_exceeded")
	})
	r, model := routerFor(t, primary, secondary)
	_, err := r.Complete(context.Background(), model, json.RawMessage(clientBody))
	// Three attempts (the default max_attempts): primary, secondary, then
	// after a backoff primary again, whose error is the last.
	var le *Error
	if !errors.As(err, &le) || le.Provider != "primary" || le.Status != 502 || !le.Retryable {
		t.Fatalf("error = %v", err)
	}
	if primary.calls() != 2 || secondary.calls() != 1 {
		t.Fatalf("calls = %d, %d", primary.calls(), secondary.calls())
	}
	got := AttemptsOf(err)
	if len(got) != 3 || got[0].Deployment() != "primary/gpt-4o-mini" || got[1].Class != ClassRateLimited || got[2].Class != ClassServerError {
		t.Fatalf("attempts = %+v", got)
	}
}

func TestRouterStopsWhenCallerGone(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { openAIError(w, 503, "x", "", "") })
	secondary := newUpstream(t, ok)
	r, model := routerFor(t, primary, secondary)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.Complete(ctx, model, json.RawMessage(clientBody))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v", err)
	}
	if secondary.calls() != 0 {
		t.Fatal("fell back after the caller left")
	}
}

func TestRouterEchoAndBadBody(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRouter(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	model, _ := cfg.Model("echo")
	resp, err := r.Complete(context.Background(), model, json.RawMessage(`{"model":"echo","messages":[{"role":"user","content":"ping"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var cc struct {
		Model   string
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.Unmarshal(resp.Body, &cc); err != nil {
		t.Fatal(err)
	}
	if cc.Model != "echo" || cc.Choices[0].Message.Content != "ping" || resp.Provider != "echo" {
		t.Errorf("echo response = %s", resp.Body)
	}
	// 3 + 4 + "user"(1) + "ping"(1)
	if resp.Usage != (Usage{PromptTokens: 9, CompletionTokens: 1}) {
		t.Errorf("usage = %+v", resp.Usage)
	}
	_, err = r.Complete(context.Background(), model, json.RawMessage(`[1]`))
	var le *Error
	if !errors.As(err, &le) || le.Status != 400 || le.Retryable {
		t.Fatalf("array body error = %v", err)
	}
	if _, err := r.Complete(context.Background(), config.Model{Name: "x", Deployments: []config.Deployment{{Provider: "nope", Model: "m"}}}, json.RawMessage(`{}`)); err == nil {
		t.Fatal("unknown provider accepted")
	}
	if _, err := NewRouter(&config.Config{Providers: []config.Provider{{Name: "p", Kind: "grpc"}}}, nil, nil, nil); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if _, err := NewRouter(nil, nil, nil, nil); err == nil {
		t.Fatal("nil config accepted")
	}
}
