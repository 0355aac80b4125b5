package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/quota"
)

// manyPartsBody is a chat request of about 4 MB: one message of 150,000
// text parts, the body that cost 2.3 CPU-seconds before admission.
func manyPartsBody() []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"echo","max_tokens":5,"messages":[{"role":"user","content":[`)
	for i := 0; i < 150_000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"text","text":"a"}`)
	}
	b.WriteString(`]}]}`)
	return b.Bytes()
}

func (e *quotaEnv) post(api int, token string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.apis[api].ServeHTTP(rec, req)
	return rec
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A key at its request rate limit sending a 4 MB body of 150,000 parts is
// refused 429 before the body is parsed: the prompt is never counted.
func TestRateLimitedLargeBodyIsRefusedBeforeCounting(t *testing.T) {
	// Not parallel: it measures the process's CPU time.
	e := newQuotaEnv(t, true)
	_, _, key := e.account(map[string]any{"requests_per_minute": 1})
	if rec := e.do(0, "POST", "/v1/chat/completions", key, chatBody(5)); rec.Code != http.StatusOK {
		t.Fatalf("first request: %d %s", rec.Code, rec.Body)
	}
	counted := e.tokens.Tokenized() + e.tokens.ByteBounded()
	body := manyPartsBody()
	if len(body) < 4_000_000 || len(body) > 4<<20 {
		t.Fatalf("body of %d bytes", len(body))
	}
	const requests = 5
	before := cpuTime(t)
	for i := 0; i < requests; i++ {
		rec := e.post(i%2, key, body)
		var eb errorBody
		mustJSON(t, rec, http.StatusTooManyRequests, &eb)
		if eb.Error.Code == nil || *eb.Error.Code != string(quota.AccountRequestsPerMinute) || rec.Header().Get("Retry-After") == "" ||
			rec.Header().Get("x-ratelimit-remaining-requests") != "0" {
			t.Fatalf("429 without the limit named: %v %s", rec.Header(), rec.Body)
		}
	}
	cpu := (cpuTime(t) - before) / requests
	if got := e.tokens.Tokenized() + e.tokens.ByteBounded(); got != counted {
		t.Fatalf("the prompt of a refused request was counted (%d estimates, %d before)", got, counted)
	}
	t.Logf("CPU per refused 4 MB request of 150,000 parts: %s", cpu.Round(10*time.Microsecond))
}

// An admitted 4 MB body of 150,000 parts is counted at a bounded cost:
// above the tokenizing limit the byte bound is used.
func TestLargeBodyIsCountedAtBoundedCost(t *testing.T) {
	// Not parallel: it measures the process's CPU time.
	e := newQuotaEnv(t, false)
	_, _, key := e.account(map[string]any{"requests_per_minute": 100, "tokens_per_minute": 100_000_000})
	body := manyPartsBody()
	before := cpuTime(t)
	rec := e.post(0, key, body)
	cpu := cpuTime(t) - before
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var resp struct {
		Usage struct {
			PromptTokens int64 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	t.Logf("CPU of one admitted 4 MB request of 150,000 parts (estimate, echo answer, events): %s; %d tokenized, %d byte-bounded; echo billed %d prompt tokens",
		cpu.Round(time.Millisecond), e.tokens.Tokenized(), e.tokens.ByteBounded(), resp.Usage.PromptTokens)
	if resp.Usage.PromptTokens <= 0 || e.tokens.ByteBounded()+e.tokens.Tokenized() != 1 {
		t.Fatalf("echo billed %d prompt tokens; %d estimates", resp.Usage.PromptTokens, e.tokens.ByteBounded()+e.tokens.Tokenized())
	}
}

// losingLimiter loses the settlements it is told to, as a process that
// died while retrying them would.
type losingLimiter struct {
	quota.Limiter
	lose atomic.Bool
}

func (l *losingLimiter) Settle(ctx context.Context, s quota.Settlement) (quota.SettleResult, error) {
	if l.lose.Load() {
		return quota.SettleResult{}, nil
	}
	return l.Limiter.Settle(ctx, s)
}

// Settlements lost with their process leave reservations that expire
// unsettled; the admission that finds them expired re-derives their spend
// from the event log, so the limiter forgets nothing.
func TestExpiredReservationsAreSettledFromTheEventLog(t *testing.T) {
	t.Parallel()
	for _, useRedis := range []bool{true, false} {
		t.Run(fmt.Sprintf("redis=%v", useRedis), func(t *testing.T) {
			losing := &losingLimiter{}
			e := newQuotaEnv(t, useRedis, func(l quota.Limiter) quota.Limiter { losing.Limiter = l; return losing })
			acc, _, key := e.account(map[string]any{"requests_per_minute": 1000, "daily_budget_usd": "1.00"})
			losing.lose.Store(true)
			for i := 0; i < 4; i++ {
				if rec := e.do(i%2, "POST", "/v1/chat/completions", key, chatBody(20)); rec.Code != http.StatusOK {
					t.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
			losing.lose.Store(false)
			lost := e.spent.Load()
			u, err := losing.Peek(context.Background(), acc, "", e.clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			if lost == 0 || u.Account.Day.Spent != 0 || u.Account.Day.Reserved == 0 {
				t.Fatalf("setup: spent %d, limiter %+v", lost, u.Account.Day)
			}
			e.clk.Add(16 * time.Minute) // past the reservations' TTL
			if rec := e.do(0, "POST", "/v1/chat/completions", key, chatBody(20)); rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			u, err = losing.Peek(context.Background(), acc, "", e.clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			if int64(u.Account.Day.Spent) != e.spent.Load() || u.Account.Day.Reserved != 0 {
				t.Fatalf("limiter spent %d reserved %d, ledger %d", u.Account.Day.Spent, u.Account.Day.Reserved, e.spent.Load())
			}
		})
	}
}
