package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/quota/admission"
	"github.com/tollgate/tollgate/quota/memory"
)

// requestFaultStore is the real store whose next request append (the one
// holding completion.requested) fails without an answer: applied and then
// timed out (as a hung server applies what it had received when it
// resumes), or never applied.
type requestFaultStore struct {
	*pgstore.Store
	applied atomic.Bool // the fault applies the append first
	armed   atomic.Bool
}

func (s *requestFaultStore) Append(ctx context.Context, streamID string, expected int64, evs ...events.Envelope) ([]events.Envelope, error) {
	isRequest := slices.ContainsFunc(evs, func(e events.Envelope) bool { return e.Type == events.TypeCompletionRequested })
	if !isRequest || !s.armed.CompareAndSwap(true, false) {
		return s.Store.Append(ctx, streamID, expected, evs...)
	}
	if s.applied.Load() {
		if _, err := s.Store.Append(ctx, streamID, expected, evs...); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("append %s: %w", streamID, context.DeadlineExceeded)
}

// A request whose append failed without an answer is resolved by reading
// it back: applied, the client gets its 202 (queued) or its answer
// (inline) and the work runs once; never applied, a 503 that leaves the
// budget reservation to expire rather than releasing spend the limiter
// could need.
func TestRequestAppendWithoutAnswerIsResolved(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	real, err := pgstore.New(pool, nil, keyindex.Projection{})
	if err != nil {
		t.Fatal(err)
	}
	store := &requestFaultStore{Store: real}
	cfg, err := config.Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, time.Now)
	lim := memory.New(nil)
	router, err := llm.NewRouter(cfg, nil, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := execution.New(execution.Config{Service: svc, LLM: router, Models: cfg.Model, Settled: admission.Settler(cfg, svc, lim, nil, time.Now)})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(APIConfig{Config: cfg, Service: svc, Executor: exec, Keys: keyindex.New(pool), ReadModels: pool, AdminToken: testAdmin,
		InstanceID: "api0", Ready: func(context.Context) error { return nil }, Quota: QuotaDeps{Limiter: lim}})
	if err != nil {
		t.Fatal(err)
	}
	e := &quotaEnv{t: t, apis: [2]http.Handler{api.Handler(), api.Handler()}}
	accID, keyID, key := e.account(map[string]any{"daily_budget_usd": "1.00"})
	reserved := func() int64 {
		u, err := lim.Peek(context.Background(), accID, keyID, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return int64(u.Account.Day.Reserved)
	}
	requests := func() int {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'completion.requested'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	store.applied.Store(true)
	store.armed.Store(true)
	rec := e.doAsync(key, chatBody(16))
	if rec.Code != http.StatusAccepted || requests() != 1 || reserved() == 0 {
		t.Fatalf("queued request applied then timed out: %d %s, %d requests, %d reserved; want 202, 1, held", rec.Code, rec.Body, requests(), reserved())
	}

	store.armed.Store(true)
	rec = e.do(0, "POST", "/v1/chat/completions", key, chatBody(16))
	if rec.Code != http.StatusOK || requests() != 2 {
		t.Fatalf("inline request applied then timed out: %d %s, %d requests; want 200 with its answer", rec.Code, rec.Body, requests())
	}

	store.applied.Store(false)
	store.armed.Store(true)
	before := reserved()
	rec = e.doAsync(key, chatBody(16))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.HasPrefix(rec.Header().Get("Location"), "/v1/jobs/chatcmpl-") ||
		requests() != 2 || reserved() <= before {
		t.Fatalf("queued request never applied: %d %s, %d requests, reserved %d (before %d); want 503 + Retry-After, nothing stored, the reservation held",
			rec.Code, rec.Body, requests(), reserved(), before)
	}
}

func (e *quotaEnv) doAsync(token string, body any) *httptest.ResponseRecorder {
	e.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Prefer", "respond-async")
	rec := httptest.NewRecorder()
	e.apis[0].ServeHTTP(rec, req)
	return rec
}
