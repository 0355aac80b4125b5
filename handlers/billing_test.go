package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/stripetest"
)

const billingWebhookSecret = "whsec_handlers_billing_test"

// billingEnv is the real router over PostgreSQL and stripe-mock (behind a
// recorder), served over HTTP, on a settable clock.
type billingEnv struct {
	t    *testing.T
	clk  *clock
	pool *pgxpool.Pool
	cfg  *config.Config
	svc  *commands.Service
	rec  *stripetest.Recorder
	srv  *httptest.Server
}

func newBillingEnv(t *testing.T) *billingEnv {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil, keyindex.Projection{}, records.CustomerLinksInline{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	// A pro-only model next to echo: same provider, another name.
	pro := cfg.Models[0]
	pro.Name = "echo-pro"
	cfg.Models = append(cfg.Models, pro)
	cfg.Plans[0].Models = []string{"echo"}
	cfg.Plans[1].StripePrice, cfg.Plans[1].StripeMeteredPrice = "price_pro", "price_pro_metered"
	cfg.Billing.CheckoutSuccessURL = "https://app.example/billing/done"
	cfg.Billing.CheckoutCancelURL = "https://app.example/billing"
	cfg.Billing.PortalReturnURL = "https://app.example/settings"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := &billingEnv{t: t, clk: &clock{now: time.Now().UTC().Truncate(time.Second)}, pool: pool, cfg: cfg}
	e.svc = commands.NewService(store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, e.clk.Now)
	router, err := llm.NewRouter(cfg, nil, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := execution.New(execution.Config{Service: e.svc, LLM: router, Models: cfg.Model, Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	url, rec := stripetest.NewRecorder(t, stripetest.Shared(t))
	e.rec = rec
	wh, err := stripe.NewWebhooks(stripe.WebhookConfig{Service: e.svc, Accounts: records.CustomerLinks{Q: pool}, Config: cfg,
		Secret: billingWebhookSecret, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(APIConfig{Config: cfg, Service: e.svc, Executor: exec, Keys: keyindex.New(pool), ReadModels: pool,
		AdminToken: testAdmin, InstanceID: "api-billing", Ready: func(context.Context) error { return nil },
		Now: e.clk.Now, Registry: prometheus.NewRegistry(),
		Billing: BillingDeps{
			Checkout: stripe.NewCheckout(e.svc, stripe.NewStripeClient(stripetest.TestSecretKey, url, 0), cfg, nil),
			Webhooks: wh, Unit: cfg.Billing.Unit,
		}})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(api.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// response is a decoded answer.
type response struct {
	status int
	body   map[string]any
	raw    string
}

func (r response) errorCode() string {
	if e, ok := r.body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

func (r response) errorMessage() string {
	if e, ok := r.body["error"].(map[string]any); ok {
		s, _ := e["message"].(string)
		return s
	}
	return ""
}

// do sends a request over HTTP; token and header may be empty.
func (e *billingEnv) do(method, path, token string, body []byte, header http.Header) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := response{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

func (e *billingEnv) must(r response, status int) response {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

// account opens an account on plan and returns its id and an API key.
func (e *billingEnv) account(plan string) (string, string) {
	e.t.Helper()
	acc := e.must(e.do("POST", "/v1/admin/accounts", testAdmin, []byte(`{"name":"Acme","email":"ops@acme.test","plan":"`+plan+`"}`), nil), http.StatusCreated)
	id, _ := acc.body["id"].(string)
	key := e.must(e.do("POST", "/v1/admin/accounts/"+id+"/keys", testAdmin, []byte(`{"name":"k"}`), nil), http.StatusCreated)
	secret, _ := key.body["key"].(string)
	return id, secret
}

// stripeEvent builds a Stripe event body.
func stripeEvent(id, typ string, created time.Time, object map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "object": "event", "type": typ, "api_version": "2023-10-16",
		"created": created.Unix(), "livemode": false, "pending_webhooks": 1, "data": map[string]any{"object": object}})
	return b
}

// webhook posts body to /v1/webhooks/stripe signed with secret, with no
// API key (Stripe has none).
func (e *billingEnv) webhook(body []byte, secret string) response {
	e.t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: time.Now()})
	return e.do("POST", "/v1/webhooks/stripe", "", sp.Payload, http.Header{"Stripe-Signature": {sp.Header}, "Content-Type": {"application/json"}})
}

func (e *billingEnv) eventCount() int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func chatBodyFor(model string) []byte {
	return []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
}

func TestBillingEndpointsThroughTheRouter(t *testing.T) {
	t.Parallel()
	e := newBillingEnv(t)
	accountID, key := e.account("free")

	// Checkout and portal need an API key.
	if r := e.do("POST", "/v1/billing/checkout", "", []byte(`{"plan":"pro"}`), nil); r.status != http.StatusUnauthorized || r.errorCode() != "missing_api_key" {
		t.Fatalf("checkout without key: %d %s", r.status, r.raw)
	}
	if r := e.do("POST", "/v1/billing/portal", "", nil, nil); r.status != http.StatusUnauthorized || r.errorCode() != "missing_api_key" {
		t.Fatalf("portal without key: %d %s", r.status, r.raw)
	}
	if r := e.do("POST", "/v1/billing/portal", key, nil, nil); r.status != http.StatusConflict || r.errorCode() != "no_billing_customer" {
		t.Fatalf("portal before checkout: %d %s", r.status, r.raw)
	}

	co := e.must(e.do("POST", "/v1/billing/checkout", key, []byte(`{"plan":"pro"}`), nil), http.StatusOK)
	cus, _ := co.body["customer"].(string)
	if co.body["object"] != "billing.checkout_session" || co.body["url"] == "" || co.body["id"] == "" || !strings.HasPrefix(cus, "cus_") {
		t.Fatalf("checkout answer %s", co.raw)
	}
	if s := e.rec.RequestsTo(http.MethodPost, "/v1/checkout/sessions"); len(s) != 1 || s[0].Form.Get("customer") != cus ||
		s[0].Form.Get("client_reference_id") != accountID || s[0].Form.Get("line_items[0][price]") != "price_pro" {
		t.Fatalf("checkout sessions that reached Stripe: %+v", s)
	}
	if r := e.do("POST", "/v1/billing/checkout", key, []byte(`{"plan":`), nil); r.status != http.StatusBadRequest || r.errorCode() != "invalid_json" {
		t.Errorf("malformed checkout: %d %s", r.status, r.raw)
	}

	portal := e.must(e.do("POST", "/v1/billing/portal", key, nil, nil), http.StatusOK)
	if portal.body["object"] != "billing.portal_session" || portal.body["url"] == "" || portal.body["customer"] != cus {
		t.Fatalf("portal answer %s", portal.raw)
	}

	// The webhook is reached without an API key: a valid signature → 200.
	completed := stripeEvent("evt_HTTPCheckout1", "checkout.session.completed", e.clk.Now(), map[string]any{
		"id": "cs_test_http", "object": "checkout.session", "mode": "subscription", "customer": cus,
		"subscription": "sub_HTTP1", "client_reference_id": accountID, "metadata": map[string]string{"account_id": accountID, "plan": "pro"},
	})
	r := e.must(e.webhook(completed, billingWebhookSecret), http.StatusOK)
	if r.body["outcome"] != events.WebhookApplied || r.body["type"] != "checkout.session.completed" {
		t.Fatalf("webhook answer %s", r.raw)
	}
	if a, err := e.svc.Account(context.Background(), accountID); err != nil || a.EffectivePlan() != "pro" {
		t.Fatalf("after checkout.session.completed: %+v, %v", a, err)
	}

	// Bad signature → 400, nothing recorded; also with an (invalid) API
	// key, which the webhook neither needs nor checks.
	before := e.eventCount()
	bad := e.webhook(stripeEvent("evt_HTTPForged", "invoice.paid", e.clk.Now(), map[string]any{"id": "in_1", "object": "invoice", "customer": cus}), "whsec_wrong")
	if bad.status != http.StatusBadRequest || bad.errorCode() != "invalid_signature" {
		t.Errorf("bad signature: %d %s", bad.status, bad.raw)
	}
	unsigned := e.do("POST", "/v1/webhooks/stripe", "tg_not_a_key", completed, http.Header{"Stripe-Signature": {"t=1,v1=00"}})
	if unsigned.status != http.StatusBadRequest || unsigned.errorCode() != "invalid_signature" {
		t.Errorf("forged signature with an API key header: %d %s", unsigned.status, unsigned.raw)
	}
	// Malformed body, correctly signed → 400, nothing recorded.
	if m := e.webhook([]byte(`{"id": "evt_broken", "type": `), billingWebhookSecret); m.status != http.StatusBadRequest || m.errorCode() != "invalid_payload" {
		t.Errorf("malformed body: %d %s", m.status, m.raw)
	}
	if n := e.eventCount(); n != before {
		t.Errorf("%d events recorded by rejected webhooks", n-before)
	}

	// Unknown type → 200 and recorded.
	unk := e.must(e.webhook(stripeEvent("evt_HTTPUnknown1", "product.created", e.clk.Now(), map[string]any{"id": "prod_1", "object": "product"}), billingWebhookSecret), http.StatusOK)
	if unk.body["outcome"] != events.WebhookUnhandled {
		t.Errorf("unknown type answer %s", unk.raw)
	}
	var recorded int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = $1 AND data->>'stripe_event_id' = 'evt_HTTPUnknown1'
		AND data->>'stripe_event_type' = 'product.created' AND data->>'outcome' = $2`, events.TypeBillingWebhookReceived, events.WebhookUnhandled).Scan(&recorded); err != nil || recorded != 1 {
		t.Errorf("unknown type recorded %d times (%v), want 1", recorded, err)
	}

	// Reconciliation: admin token only, period validated.
	period := e.clk.Now().Format("2006-01")
	if r := e.do("GET", "/v1/admin/billing/reconciliation?period="+period, key, nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("reconciliation with a client key: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/admin/billing/reconciliation?period=2026-13", testAdmin, nil, nil); r.status != http.StatusBadRequest || r.errorCode() != "invalid_value" {
		t.Errorf("bad period: %d %s", r.status, r.raw)
	}
	// A completion, so the period has something to reconcile.
	e.must(e.do("POST", "/v1/chat/completions", key, chatBodyFor("echo"), nil), http.StatusOK)
	rec := e.must(e.do("GET", "/v1/admin/billing/reconciliation?period="+period, testAdmin, nil, nil), http.StatusOK)
	if rec.body["period"] != period || rec.body["unit"] != e.cfg.Billing.Unit {
		t.Fatalf("reconciliation %s", rec.raw)
	}
	if _, ok := rec.body["agrees"].(bool); !ok {
		t.Errorf("reconciliation has no verdict: %s", rec.raw)
	}
}

func TestDowngradedAccountIsToldTheModelIsNotInItsPlan(t *testing.T) {
	t.Parallel()
	e := newBillingEnv(t)
	ctx := context.Background()
	accountID, key := e.account("free")
	co := e.must(e.do("POST", "/v1/billing/checkout", key, []byte(`{"plan":"pro"}`), nil), http.StatusOK)
	cus, _ := co.body["customer"].(string)
	t0 := e.clk.Now()
	e.must(e.webhook(stripeEvent("evt_DG1", "checkout.session.completed", t0, map[string]any{
		"id": "cs_dg", "object": "checkout.session", "mode": "subscription", "customer": cus, "subscription": "sub_DG1",
		"client_reference_id": accountID, "metadata": map[string]string{"account_id": accountID, "plan": "pro"},
	}), billingWebhookSecret), http.StatusOK)
	e.clk.Add(2 * time.Second) // past the key cache
	e.must(e.do("POST", "/v1/chat/completions", key, chatBodyFor("echo-pro"), nil), http.StatusOK)

	e.must(e.webhook(stripeEvent("evt_DG2", "invoice.payment_failed", t0.Add(time.Second), map[string]any{
		"id": "in_DG1", "object": "invoice", "customer": cus, "subscription": "sub_DG1",
	}), billingWebhookSecret), http.StatusOK)
	e.clk.Add(e.cfg.Billing.GracePeriod.D() + time.Minute)
	if _, err := e.svc.Downgrade(ctx, events.Metadata{AccountID: accountID, Actor: "system:test"}, accountID, e.clk.Now(), e.cfg.Billing.FallbackPlan); err != nil {
		t.Fatalf("downgrade: %v", err)
	}

	r := e.do("POST", "/v1/chat/completions", key, chatBodyFor("echo-pro"), nil)
	if r.status != http.StatusForbidden || r.errorCode() != "model_not_in_plan" ||
		!strings.Contains(r.errorMessage(), "`"+e.cfg.Billing.FallbackPlan+"`") || strings.Contains(r.errorMessage(), "does not exist") {
		t.Fatalf("pro-only model after the downgrade: %d %s", r.status, r.raw)
	}
	// Models of the fallback plan still work; an unknown model is still 404.
	e.must(e.do("POST", "/v1/chat/completions", key, chatBodyFor("echo"), nil), http.StatusOK)
	if r := e.do("POST", "/v1/chat/completions", key, chatBodyFor("gpt-nope"), nil); r.status != http.StatusNotFound || r.errorCode() != "model_not_found" {
		t.Errorf("unknown model: %d %s", r.status, r.raw)
	}
	models := e.must(e.do("GET", "/v1/models", key, nil, nil), http.StatusOK)
	if strings.Contains(models.raw, `"echo-pro"`) {
		t.Errorf("/v1/models lists a model outside the plan: %s", models.raw)
	}
}
