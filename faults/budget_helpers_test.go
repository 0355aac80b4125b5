package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tiktoken-go/tokenizer"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/handlers"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/admission"
	quotaredis "github.com/tollgate/tollgate/quota/redis"
	"github.com/tollgate/tollgate/redistest"
)

const budgetAdmin = "admin-token-for-budget-faults"

// budgetClient is a Redis client set up as server.quotaLimiter sets it up:
// a slow Redis fails a call within a second (after go-redis's own retries
// of a timed-out call, maxRetries: 0 its default of 3, -1 none).
func budgetClient(addr string, maxRetries int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		PoolSize: 64, MaxRetries: maxRetries})
}

// budgetProvider is an OpenAI-compatible provider that bills honestly:
// prompt tokens are o200k_base counts of what it was sent (OpenAI's
// per-message recipe), each of the n choices is max_tokens tokens long
// (or 150 when the request sets none), and usage says exactly that.
type budgetProvider struct {
	*httptest.Server
	enc                tokenizer.Codec
	delay              atomic.Int64 // nanoseconds
	prompt, completion atomic.Int64
	calls, received    atomic.Int64
}

// budgetPromptTokens is what OpenAI bills for a prompt: 3 per message,
// its role and content (text parts concatenated), 1 more for a name, 3
// for the reply's priming, and the tools' JSON text.
func budgetPromptTokens(enc tokenizer.Codec, req budgetRequest) int64 {
	count := func(s string) int64 { n, _ := enc.Count(s); return int64(n) }
	n := int64(3)
	for _, m := range req.Messages {
		n += 3 + count(m.Role)
		if m.Name != "" {
			n += 1 + count(m.Name)
		}
		var s string
		if json.Unmarshal(m.Content, &s) != nil {
			var parts []struct{ Type, Text string }
			_ = json.Unmarshal(m.Content, &parts)
			var b strings.Builder
			for _, p := range parts {
				b.WriteString(p.Text)
			}
			s = b.String()
		}
		n += count(s)
	}
	if len(req.Tools) > 0 {
		n += count(string(req.Tools))
	}
	return n
}

type budgetRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Name    string          `json:"name"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools               json.RawMessage `json:"tools"`
	N                   *int            `json:"n"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
}

func budgetStartProvider(t *testing.T) *budgetProvider {
	t.Helper()
	enc, err := tokenizer.Get(tokenizer.O200kBase)
	if err != nil {
		t.Fatal(err)
	}
	p := &budgetProvider{enc: enc}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	return p
}

func (p *budgetProvider) serve(w http.ResponseWriter, r *http.Request) {
	var req budgetRequest
	if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	p.received.Add(1)
	select {
	case <-time.After(time.Duration(p.delay.Load())):
	case <-r.Context().Done():
		return
	}
	n := 1
	if req.N != nil {
		n = *req.N
	}
	limit := int64(150)
	if req.MaxCompletionTokens != nil {
		limit = *req.MaxCompletionTokens
	} else if req.MaxTokens != nil {
		limit = *req.MaxTokens
	}
	prompt := budgetPromptTokens(p.enc, req)
	var completion int64
	choices := make([]map[string]any, n)
	for i := range choices {
		text := "the" + strings.Repeat(" the", int(max(limit-1, 0)))
		c, _ := p.enc.Count(text)
		completion += int64(c)
		choices[i] = map[string]any{"index": i, "message": map[string]any{"role": "assistant", "content": text, "refusal": nil},
			"logprobs": nil, "finish_reason": "length"}
	}
	p.calls.Add(1)
	p.prompt.Add(prompt)
	p.completion.Add(completion)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"id": fmt.Sprintf("chatcmpl-up%d", p.calls.Load()), "object": "chat.completion",
		"created": time.Now().Unix(), "model": req.Model, "choices": choices, "system_fingerprint": "fp_budget",
		"usage": map[string]int64{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

// budgetClock is a settable clock.
type budgetClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *budgetClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *budgetClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// budgetCountingHandler counts the settler's records: settlements that
// failed at first (retrying), and those that never reached the limiter
// (the error "settle reservation").
type budgetCountingHandler struct {
	slog.Handler
	retried, lost *atomic.Int64
}

func (h budgetCountingHandler) Handle(_ context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelError && r.Message == "settle reservation":
		h.lost.Add(1)
	case r.Message == "settle reservation: retrying":
		h.retried.Add(1)
	}
	return nil
}

func (h budgetCountingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h budgetCountingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h budgetCountingHandler) WithGroup(string) slog.Handler            { return h }

// budgetEnv is two API instances on one database, each with its own Redis
// client of one shared private Redis, in front of an honest provider.
type budgetEnv struct {
	cfg      *config.Config
	clk      *budgetClock
	redis    *redistest.Server
	provider *budgetProvider
	urls     [2]string
	limiter  quota.Limiter // a third client, for reading the limiter
	price    money.Price
	// ledger is what the recorded outcomes cost; maxReserved the largest
	// reservation admitted; settled counts outcomes with a reservation.
	ledger, maxReserved, settled        atomic.Int64
	lostSettlements, retriedSettlements atomic.Int64
	// paused is set while Redis is stopped; duringPause counts the
	// settlements begun meanwhile.
	paused      atomic.Bool
	duringPause atomic.Int64
}

func budgetStartEnv(t *testing.T, budgetUSD string, maxRetries int) *budgetEnv {
	t.Helper()
	e := &budgetEnv{clk: &budgetClock{now: time.Now().UTC().Truncate(24 * time.Hour).Add(9 * time.Hour)}}
	e.redis = redistest.Start(t)
	e.provider = budgetStartProvider(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
providers: [{name: openai, kind: openai, base_url: %q, timeout: 20s}]
models:
  - name: gpt-4o-mini
    deployments: [{provider: openai, model: gpt-4o-mini}]
    price: {input_per_million: "0.15", output_per_million: "0.60"}
    max_output_tokens: 200
plans: [{name: free, requests_per_minute: 100000, tokens_per_minute: 1000000000, daily_budget_usd: %q}]
`, e.provider.URL+"/v1", budgetUSD)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	m, _ := cfg.Model("gpt-4o-mini")
	e.price = m.ParsedPrice()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil, keyindex.Projection{})
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, e.clk.Now)
	router, err := llm.NewRouter(cfg, nil, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(budgetCountingHandler{Handler: slog.DiscardHandler, retried: &e.retriedSettlements, lost: &e.lostSettlements})
	reader := budgetClient(e.redis.Addr(), 0)
	t.Cleanup(func() { reader.Close() })
	e.limiter = quotaredis.New(reader, "tollgate:quota:", nil)
	for i := range e.urls {
		rdb := budgetClient(e.redis.Addr(), maxRetries)
		t.Cleanup(func() { rdb.Close() })
		lim := quotaredis.New(rdb, "tollgate:quota:", nil)
		settle := admission.Settler(cfg, svc, lim, logger, e.clk.Now)
		exec, err := execution.New(execution.Config{Service: svc, LLM: router, Models: cfg.Model, Now: e.clk.Now,
			Settled: func(ctx context.Context, c completion.Completion) {
				if c.Reservation != nil {
					e.settled.Add(1)
					for old := e.maxReserved.Load(); c.Reservation.CostNanoUSD > old && !e.maxReserved.CompareAndSwap(old, c.Reservation.CostNanoUSD); old = e.maxReserved.Load() {
					}
				}
				if c.Succeeded != nil {
					e.ledger.Add(c.Succeeded.CostNanoUSD)
				}
				if e.paused.Load() {
					e.duringPause.Add(1)
				}
				settle(ctx, c)
			}})
		if err != nil {
			t.Fatal(err)
		}
		api, err := handlers.NewAPI(handlers.APIConfig{Config: cfg, Service: svc, Executor: exec, Keys: keyindex.New(pool), ReadModels: pool,
			AdminToken: budgetAdmin, InstanceID: fmt.Sprintf("api%d", i), Ready: func(context.Context) error { return nil },
			Now: e.clk.Now, Quota: handlers.QuotaDeps{Limiter: lim}})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		e.urls[i] = srv.URL
	}
	return e
}

var budgetHTTP = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}

// do sends one request to instance api and returns its status and body.
func (e *budgetEnv) do(api int, method, path, token string, body any) (int, []byte, error) {
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return 0, nil, err
		}
	}
	req, err := http.NewRequest(method, e.urls[api]+path, &buf)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := budgetHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// account opens an account on plan free and returns its id and a key.
func (e *budgetEnv) account(t *testing.T) (string, string) {
	t.Helper()
	status, body, err := e.do(0, "POST", "/v1/admin/accounts", budgetAdmin, map[string]string{"name": "Budget", "plan": "free"})
	var acc struct{ ID string }
	if err != nil || status != http.StatusCreated || json.Unmarshal(body, &acc) != nil {
		t.Fatalf("create account: %d %s %v", status, body, err)
	}
	status, body, err = e.do(0, "POST", "/v1/admin/accounts/"+acc.ID+"/keys", budgetAdmin, map[string]string{"name": "k"})
	var key struct{ Key string }
	if err != nil || status != http.StatusCreated || json.Unmarshal(body, &key) != nil {
		t.Fatalf("create key: %d %s %v", status, body, err)
	}
	return acc.ID, key.Key
}

// budgetCJK is a prompt of n characters: CJK ideographs with some
// punctuation and emoji, the scripts a letters-run estimate undercounts.
func budgetCJK(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		switch x := r.IntN(40); {
		case x == 0:
			b.WriteRune(rune(0x1F600 + r.IntN(80))) // emoji
		case x == 1:
			b.WriteString("，")
		case x == 2:
			b.WriteString("。")
		default:
			b.WriteRune(rune(0x4E00 + r.IntN(0x9FFF-0x4E00)))
		}
	}
	return b.String()
}

// budgetBody is a chat request for the test's model: a CJK prompt, n
// choices, max_tokens (0: unset), and now and then a tool.
func budgetBody(r *rand.Rand, n int, maxTokens int64) map[string]any {
	body := map[string]any{"model": "gpt-4o-mini", "n": n, "messages": []map[string]any{
		{"role": "system", "content": "你是一个乐于助人的助手。"},
		{"role": "user", "content": budgetCJK(r, 1500)},
	}}
	if maxTokens > 0 {
		body["max_tokens"] = maxTokens
	}
	if r.IntN(3) == 0 {
		body["tools"] = []map[string]any{{"type": "function", "function": map[string]any{"name": "查询天气", "description": "查询某个城市今天的天气情况",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"城市": map[string]string{"type": "string"}}}}}}
	}
	return body
}
