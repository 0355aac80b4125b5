package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/admission"
	"github.com/tollgate/tollgate/quota/memory"
	quotaredis "github.com/tollgate/tollgate/quota/redis"
	"github.com/tollgate/tollgate/redistest"
	"github.com/tollgate/tollgate/tokens"
)

const testAdmin = "admin-token-for-quota-tests"

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// quotaEnv is two API instances on one database, sharing one limiter
// (Redis, or one in-process limiter when redis is false).
type quotaEnv struct {
	t     *testing.T
	clk   *clock
	cfg   *config.Config
	apis  [2]http.Handler
	spent atomic.Int64
	// tokens is the instances' prompt counter: how often they estimated.
	tokens *tokens.Counter
}

// newQuotaEnv builds the instances; wrap (optional) wraps the limiter they
// share.
func newQuotaEnv(t *testing.T, useRedis bool, wrap ...func(quota.Limiter) quota.Limiter) *quotaEnv {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil, keyindex.Projection{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	e := &quotaEnv{t: t, clk: &clock{now: time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)}, cfg: cfg, tokens: &tokens.Counter{}}
	svc := commands.NewService(store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, e.clk.Now)
	var lim quota.Limiter = memory.New(nil)
	if useRedis {
		rdb, prefix := redistest.Shared(t, 200)
		lim = quotaredis.New(rdb, prefix, nil)
	}
	for _, w := range wrap {
		lim = w(lim)
	}
	router, err := llm.NewRouter(cfg, nil, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	settle := admission.Settler(cfg, svc, lim, nil, e.clk.Now)
	for i := range e.apis {
		// Each instance has its own executor and limiter client, as two
		// replicas would; the settler also counts what was really spent.
		exec, err := execution.New(execution.Config{Service: svc, LLM: router, Models: cfg.Model, Now: e.clk.Now,
			Settled: func(ctx context.Context, c completion.Completion) {
				if c.Succeeded != nil {
					e.spent.Add(c.Succeeded.CostNanoUSD)
				}
				settle(ctx, c)
			}})
		if err != nil {
			t.Fatal(err)
		}
		api, err := NewAPI(APIConfig{Config: cfg, Service: svc, Executor: exec, Keys: keyindex.New(pool), ReadModels: pool,
			AdminToken: testAdmin, InstanceID: fmt.Sprintf("api%d", i), Ready: func(context.Context) error { return nil },
			Now: e.clk.Now, Quota: QuotaDeps{Limiter: lim, Tokens: e.tokens}})
		if err != nil {
			t.Fatal(err)
		}
		e.apis[i] = api.Handler()
	}
	return e
}

func (e *quotaEnv) do(api int, method, path, token string, body any) *httptest.ResponseRecorder {
	e.t.Helper()
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			e.t.Fatal(err)
		}
	}
	req := httptest.NewRequest(method, path, &buf)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.apis[api].ServeHTTP(rec, req)
	return rec
}

// account opens an account with limits and returns its id and a key.
func (e *quotaEnv) account(limits map[string]any) (string, string, string) {
	e.t.Helper()
	rec := e.do(0, "POST", "/v1/admin/accounts", testAdmin, map[string]string{"name": "Acme", "plan": "free"})
	var acc struct{ ID string }
	mustJSON(e.t, rec, http.StatusCreated, &acc)
	if limits != nil {
		mustJSON(e.t, e.do(0, "PATCH", "/v1/admin/accounts/"+acc.ID, testAdmin, map[string]any{"limits": limits}), http.StatusOK, nil)
	}
	var key struct{ ID, Key string }
	mustJSON(e.t, e.do(0, "POST", "/v1/admin/accounts/"+acc.ID+"/keys", testAdmin, map[string]string{"name": "k"}), http.StatusCreated, &key)
	return acc.ID, key.ID, key.Key
}

func mustJSON(t *testing.T, rec *httptest.ResponseRecorder, status int, v any) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatal(err)
		}
	}
}

func chatBody(maxTokens int) map[string]any {
	return map[string]any{"model": "echo", "max_tokens": maxTokens, "messages": []map[string]string{{"role": "user", "content": "hello there"}}}
}

// Under 500 concurrent requests on two instances against a nearly spent
// budget, spend never passes the budget by more than one reservation.
func TestBudgetHoldsUnderConcurrencyOnTwoInstances(t *testing.T) {
	t.Parallel()
	for _, useRedis := range []bool{true, false} {
		t.Run(fmt.Sprintf("redis=%v", useRedis), func(t *testing.T) {
			e := newQuotaEnv(t, useRedis)
			const budget = "0.02"
			_, _, key := e.account(map[string]any{"requests_per_minute": 100000, "tokens_per_minute": 100000000, "daily_budget_usd": budget})
			var ok, rejected atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < 500; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rec := e.do(i%2, "POST", "/v1/chat/completions", key, chatBody(1000))
					switch rec.Code {
					case http.StatusOK:
						ok.Add(1)
					case http.StatusTooManyRequests:
						var body errorBody
						_ = json.Unmarshal(rec.Body.Bytes(), &body)
						if body.Error.Code == nil || *body.Error.Code != string(quota.AccountDailyBudget) || rec.Header().Get("Retry-After") == "" {
							t.Errorf("429 without the limit named: %s %v", rec.Body, rec.Header())
						}
						rejected.Add(1)
					default:
						t.Errorf("status %d: %s", rec.Code, rec.Body)
					}
				}()
			}
			wg.Wait()
			b, _ := money.ParseUSD(budget)
			m, _ := e.cfg.Model("echo")
			est, err := (&tokens.Counter{}).Prompt(mustMarshal(t, chatBody(1000)), tokens.ForDeployment("echo", false, "echo"))
			if err != nil {
				t.Fatal(err)
			}
			_, reservation, _ := quota.WorstCase(m.ParsedPrice(), est.PromptTokens, 1000, 1, 0, 4096)
			if got := e.spent.Load(); got > int64(b+reservation) {
				t.Fatalf("spent %d nano-USD, budget %d + one reservation %d", got, b, reservation)
			}
			if ok.Load() == 0 || rejected.Load() == 0 {
				t.Fatalf("ok %d, rejected %d: want both", ok.Load(), rejected.Load())
			}
			t.Logf("admitted %d, rejected %d, spent %d of %d", ok.Load(), rejected.Load(), e.spent.Load(), b)
		})
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The headers count down, and reset as the window slides (injected clock).
func TestRateLimitHeadersCountDownAndReset(t *testing.T) {
	t.Parallel()
	e := newQuotaEnv(t, true)
	_, _, key := e.account(map[string]any{"requests_per_minute": 3, "tokens_per_minute": 100000})
	for i := 2; i >= 0; i-- {
		rec := e.do(i%2, "POST", "/v1/chat/completions", key, chatBody(10))
		if rec.Code != http.StatusOK || rec.Header().Get("x-ratelimit-limit-requests") != "3" ||
			rec.Header().Get("x-ratelimit-remaining-requests") != fmt.Sprint(i) || rec.Header().Get("x-ratelimit-reset-requests") != "1m0s" ||
			rec.Header().Get("x-ratelimit-limit-tokens") != "100000" {
			t.Fatalf("request with %d left: %d %v %s", i, rec.Code, rec.Header(), rec.Body)
		}
	}
	e.clk.Add(20 * time.Second)
	rec := e.do(0, "POST", "/v1/chat/completions", key, chatBody(10))
	var body errorBody
	mustJSON(t, rec, http.StatusTooManyRequests, &body)
	if *body.Error.Code != string(quota.AccountRequestsPerMinute) || rec.Header().Get("Retry-After") != "40" ||
		rec.Header().Get("x-ratelimit-remaining-requests") != "0" || rec.Header().Get("x-ratelimit-reset-requests") != "40s" {
		t.Fatalf("429: %v %s", rec.Header(), rec.Body)
	}
	e.clk.Add(40 * time.Second)
	rec = e.do(1, "POST", "/v1/chat/completions", key, chatBody(10))
	if rec.Code != http.StatusOK || rec.Header().Get("x-ratelimit-remaining-requests") != "2" {
		t.Fatalf("after the window: %d %v", rec.Code, rec.Header())
	}
	var q struct {
		Account scopeJSON `json:"account"`
	}
	mustJSON(t, e.do(0, "GET", "/v1/quota", key, nil), http.StatusOK, &q)
	if q.Account.RequestsPerMinute.Limit != 3 || *q.Account.RequestsPerMinute.Remaining != 2 || q.Account.Budgets[0].SpentUSD == "0.000000000" {
		t.Fatalf("GET /v1/quota: %+v", q.Account)
	}
}

// A suspension or a plan change made on one instance takes effect on the
// other within the key cache's one second.
func TestSuspensionAndPlanChangeReachOtherInstanceWithinOneSecond(t *testing.T) {
	t.Parallel()
	e := newQuotaEnv(t, true)
	acc, keyID, key := e.account(nil)
	if rec := e.do(1, "POST", "/v1/chat/completions", key, chatBody(10)); rec.Code != http.StatusOK {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	mustJSON(t, e.do(0, "PATCH", "/v1/admin/keys/"+keyID, testAdmin, map[string]any{"suspended": true}), http.StatusOK, nil)
	e.clk.Add(time.Second + time.Millisecond)
	rec := e.do(1, "POST", "/v1/chat/completions", key, chatBody(10))
	var body errorBody
	mustJSON(t, rec, http.StatusForbidden, &body)
	if *body.Error.Code != "api_key_suspended" {
		t.Fatalf("suspended: %s", rec.Body)
	}
	mustJSON(t, e.do(0, "PATCH", "/v1/admin/keys/"+keyID, testAdmin, map[string]any{"suspended": false}), http.StatusOK, nil)
	// A plan with requests_per_minute 600 instead of free's 60.
	mustJSON(t, e.do(0, "PATCH", "/v1/admin/accounts/"+acc, testAdmin, map[string]any{"plan": "pro"}), http.StatusOK, nil)
	e.clk.Add(time.Second + time.Millisecond)
	rec = e.do(1, "POST", "/v1/chat/completions", key, chatBody(10))
	if rec.Code != http.StatusOK || rec.Header().Get("x-ratelimit-limit-requests") != "600" {
		t.Fatalf("after plan change: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}
