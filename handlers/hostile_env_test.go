package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing/records"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/pgtest"
)

const hostileWebhookSecret = "whsec_handlers_hostile_input"

// hostileEnv is the real API (router, PostgreSQL event store, echo
// provider, Stripe webhooks) served over HTTP, with one account on a plan
// without rate limits or budgets, so that hostile input reaches every
// layer instead of stopping at admission.
type hostileEnv struct {
	pool      *pgxpool.Pool
	svc       *commands.Service
	srv       *httptest.Server
	client    *http.Client
	accountID string
	keyID     string
	key       string
}

// hostileResponse is one answer: its status, body and decoded error.
type hostileResponse struct {
	status int
	raw    []byte
	err    *errorBody
}

func (r hostileResponse) param() string {
	if r.err == nil || r.err.Error.Param == nil {
		return ""
	}
	return *r.err.Error.Param
}

func (r hostileResponse) code() string {
	if r.err == nil || r.err.Error.Code == nil {
		return ""
	}
	return *r.err.Error.Code
}

func newHostileEnv(tb testing.TB) *hostileEnv {
	tb.Helper()
	pool, _ := pgtest.NewPool(tb)
	store, err := pgstore.New(pool, nil, keyindex.Projection{}, records.CustomerLinksInline{})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := config.Default()
	cfg.Plans = append(cfg.Plans, config.Plan{Name: "lab"})  // no rate limits, no budgets
	cfg.Env.CallbackSecret = "callback-secret-hostile-input" // so callback_url is validated, not refused
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	svc := commands.NewService(store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, time.Now)
	router, err := llm.NewRouter(cfg, nil, func(string) string { return "" }, nil)
	if err != nil {
		tb.Fatal(err)
	}
	exec, err := execution.New(execution.Config{Service: svc, LLM: router, Streams: router, Models: cfg.Model})
	if err != nil {
		tb.Fatal(err)
	}
	wh, err := stripe.NewWebhooks(stripe.WebhookConfig{Service: svc, Accounts: records.CustomerLinks{Q: pool}, Config: cfg,
		Secret: hostileWebhookSecret, Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	api, err := NewAPI(APIConfig{Config: cfg, Service: svc, Executor: exec, Keys: keyindex.New(pool), ReadModels: pool,
		AdminToken: testAdmin, InstanceID: "api-hostile", Ready: func(context.Context) error { return nil },
		Registry: prometheus.NewRegistry(), Billing: BillingDeps{Webhooks: wh, Unit: cfg.Billing.Unit}, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		tb.Fatal(err)
	}
	e := &hostileEnv{pool: pool, svc: svc, srv: httptest.NewServer(api.Handler()), client: &http.Client{Timeout: 30 * time.Second}}
	tb.Cleanup(e.srv.Close)
	acc := e.do(tb, "POST", "/v1/admin/accounts", testAdmin, []byte(`{"name":"Hostile","plan":"lab"}`), nil)
	var a struct{ ID string }
	if acc.status != http.StatusCreated || json.Unmarshal(acc.raw, &a) != nil {
		tb.Fatalf("create account: %d %s", acc.status, acc.raw)
	}
	key := e.do(tb, "POST", "/v1/admin/accounts/"+a.ID+"/keys", testAdmin, []byte(`{"name":"k"}`), nil)
	var k struct{ ID, Key string }
	if key.status != http.StatusCreated || json.Unmarshal(key.raw, &k) != nil {
		tb.Fatalf("issue key: %d %s", key.status, key.raw)
	}
	e.accountID, e.keyID, e.key = a.ID, k.ID, k.Key
	return e
}

// do sends a request over HTTP. path is sent as written (percent escapes
// and all); token and header may be empty.
func (e *hostileEnv) do(tb testing.TB, method, path, token string, body []byte, header http.Header) hostileResponse {
	tb.Helper()
	req, err := http.NewRequest(method, e.srv.URL, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	// Opaque keeps the path byte for byte: %00 and %FF reach the server.
	req.URL.Opaque = path
	for k, vs := range header {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	out := hostileResponse{status: resp.StatusCode, raw: raw}
	if resp.StatusCode >= 400 {
		var eb errorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" && eb.Error.Type != "" {
			out.err = &eb
		}
	}
	return out
}

// signed returns payload's Stripe-Signature header for secret at ts,
// computed as Stripe computes it.
func hostileSigned(payload []byte, secret string, ts time.Time) http.Header {
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: ts})
	return http.Header{"Stripe-Signature": {sp.Header}, "Content-Type": {"application/json"}}
}

// eventCount counts the events stored.
func (e *hostileEnv) eventCount(tb testing.TB) int {
	tb.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// checkError fails unless r is a 4xx with a well-formed OpenAI error body.
func hostileCheck(tb testing.TB, what string, r hostileResponse) {
	tb.Helper()
	if r.status >= 500 {
		tb.Fatalf("%s: %d (server error): %s", what, r.status, r.raw)
	}
	if r.status >= 400 && r.err == nil {
		tb.Fatalf("%s: %d without an OpenAI error body: %s", what, r.status, r.raw)
	}
}

// doRawHeader sends a POST whose header name: value is written byte for
// byte (net/http's client refuses some bytes a server receives).
func (e *hostileEnv) doRawHeader(tb testing.TB, path, token string, body []byte, name, value string) hostileResponse {
	tb.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s: %s\r\nConnection: close\r\n\r\n",
		path, token, len(body), name, value)
	if _, err := conn.Write(append([]byte(req), body...)); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return hostileResponse{status: resp.StatusCode, raw: raw}
}
