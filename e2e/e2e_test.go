package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	quotastate "github.com/tollgate/tollgate/quota/state"
	"github.com/tollgate/tollgate/schemas"
	"github.com/tollgate/tollgate/server"
	"github.com/tollgate/tollgate/stripetest"
)

// upstream is a fake OpenAI-compatible provider.
type upstream struct {
	*httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	seen  []map[string]any
	// delay (nanoseconds) makes every answer slow, so a test can watch a
	// job run.
	delay atomic.Int64
	// streamGap (nanoseconds) is the pause between streamed chunks.
	streamGap atomic.Int64
}

const (
	upstreamPrompt     = 12
	upstreamCompletion = 5
)

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-upstream-test" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":{"message":"not found","type":"invalid_request_error","code":null}}`)
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		u.calls.Add(1)
		u.mu.Lock()
		u.seen = append(u.seen, body)
		u.mu.Unlock()
		time.Sleep(time.Duration(u.delay.Load()))
		if body["model"] == "upstream-broken" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error","code":null}}`)
			return
		}
		if body["stream"] == true {
			u.stream(w, r, body)
			return
		}
		if _, ok := body["tools"]; ok {
			u.toolCall(w, body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-upstream1","object":"chat.completion","created":%d,"model":%q,
			"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from upstream","refusal":null},"logprobs":null,"finish_reason":"stop"}],
			"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d},"system_fingerprint":"fp_test"}`,
			time.Now().Unix(), body["model"], upstreamPrompt, upstreamCompletion, upstreamPrompt+upstreamCompletion)
	}))
	t.Cleanup(u.Close)
	return u
}

// env is one running Tollgate with everything around it.
type env struct {
	t        *testing.T
	srv      *server.Server
	base     string
	up       *upstream
	stripe   *stripetest.Recorder
	store    *pgstore.Store
	kafka    []string
	admin    string
	validate *schemas.Validator
}

const configYAML = `
providers:
  - name: upstream
    kind: openai
    base_url: %s/v1
    api_key_env: UPSTREAM_API_KEY
  - name: echo
    kind: echo
models:
  - name: gpt-test
    description: the fake upstream
    deployments:
      - provider: upstream
        model: upstream-model-1
    price:
      input_per_million: "2.50"
      output_per_million: "10.00"
  - name: gpt-fallback
    description: a broken deployment first, then the fake upstream
    deployments:
      - provider: upstream
        model: upstream-broken
      - provider: upstream
        model: upstream-model-1
    price:
      input_per_million: "2.50"
      output_per_million: "10.00"
  - name: echo
    deployments:
      - provider: echo
        model: echo
    price:
      input_per_million: "0.50"
      output_per_million: "1.50"
plans:
  - name: free
    requests_per_minute: 600
  - name: basic
    models: [echo, gpt-test]
    requests_per_minute: 600
  - name: pro
    stripe_price: price_e2e_pro
    stripe_metered_price: price_e2e_pro_tokens
    requests_per_minute: 600
billing:
  window: 2s
  report_delay: 1s
  report_interval: 200ms
  grace_period: 2s
  dunning_interval: 200ms
  fallback_plan: basic
  checkout_success_url: https://app.example/billing/done
  checkout_cancel_url: https://app.example/billing
  portal_return_url: https://app.example/settings
`

func start(t *testing.T, kafka bool) *env {
	t.Helper()
	e := &env{t: t, up: newUpstream(t), admin: "admin-token-for-e2e-tests"}
	dsn := pgtest.NewDatabase(t)
	stripeURL, rec := stripetest.NewRecorder(t, stripetest.Shared(t))
	e.stripe = rec
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, configYAML, e.up.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"TOLLGATE_DATABASE_URL": dsn,
		"TOLLGATE_ADMIN_TOKEN":  e.admin,
		"STRIPE_SECRET_KEY":     "sk_test_123",
		"STRIPE_API_BASE":       stripeURL,
		"STRIPE_WEBHOOK_SECRET": e2eWebhookSecret,
		"UPSTREAM_API_KEY":      "sk-upstream-test",
		"TOLLGATE_INSTANCE_ID":  "e2e",
		// Short, so a slow upstream shows the 202 a request past its
		// response deadline gets.
		"TOLLGATE_RESPONSE_DEADLINE": "1s",
	}
	if kafka {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, bus.Topic, bus.JobsTopic, bus.DeadLetterTopic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		e.kafka = c.ListenAddrs()
		vars["TOLLGATE_KAFKA_BROKERS"] = strings.Join(e.kafka, ",")
	}
	getenv := func(k string) string { return vars[k] }
	cfg, err := config.Load(path, getenv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.srv, err = server.Start(ctx, server.Options{
		Config: cfg, Roles: server.AllRoles(), Listener: ln, Getenv: getenv,
		Logger:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		BusPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.srv.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	e.base = "http://" + e.srv.Addr
	e.store = e.srv.Store
	if e.validate, err = schemas.NewValidator(); err != nil {
		t.Fatal(err)
	}
	return e
}

// testWriter sends logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) do(method, path, token string, body any, headers ...string) (int, map[string]any, http.Header) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.base+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: body %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// eventually polls f until it returns nil or the time is up.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEndToEndPostgreSQLBus(t *testing.T) {
	t.Parallel()
	scenario(t, start(t, false))
}

func TestEndToEndKafka(t *testing.T) {
	t.Parallel()
	e := start(t, true)
	scenario(t, e)

	// Outside tools read the bus as it is: the key is the account id and
	// the headers are CloudEvents attributes.
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka...), kgo.ConsumeTopics(bus.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seen int
	for seen == 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no records on the Kafka topic")
		}
		fs.EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			var env events.Envelope
			if err := json.Unmarshal(r.Value, &env); err != nil {
				t.Fatalf("record value is not an event envelope: %v", err)
			}
			if string(r.Key) != env.Metadata.AccountID {
				t.Errorf("record key %q, want the account id %q", r.Key, env.Metadata.AccountID)
			}
			if h["ce_id"] != env.EventID.String() || h["ce_type"] != env.Type || h["ce_subject"] != env.StreamID || h["ce_specversion"] != "1.0" || h["ce_source"] == "" || h["ce_time"] == "" {
				t.Errorf("CloudEvents headers %v do not describe event %s %s", h, env.EventID, env.Type)
			}
			seen++
		})
	}
}

func scenario(t *testing.T, e *env) {
	// Ops endpoints.
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body, _ := e.do("GET", p, "", nil); code != 200 {
			t.Fatalf("GET %s: %d %v", p, code, body)
		}
	}

	// An operator creates an account and a key.
	if code, _, _ := e.do("POST", "/v1/admin/accounts", "wrong-token", map[string]string{"name": "x"}); code != 401 {
		t.Fatalf("admin with a wrong token: %d, want 401", code)
	}
	code, acc, _ := e.do("POST", "/v1/admin/accounts", e.admin, map[string]string{
		"name": "Acme", "email": "ops@acme.test", "plan": "free", "stripe_customer_id": "cus_e2etest",
	})
	if code != 201 || !strings.HasPrefix(acc["id"].(string), "acc_") {
		t.Fatalf("create account: %d %v", code, acc)
	}
	accountID := acc["id"].(string)
	code, key, _ := e.do("POST", "/v1/admin/accounts/"+accountID+"/keys", e.admin, map[string]string{"name": "ci"})
	if code != 201 || !strings.HasPrefix(key["key"].(string), "tg_") || !strings.HasPrefix(key["id"].(string), "key_") {
		t.Fatalf("issue key: %d %v", code, key)
	}
	secret := key["key"].(string)

	// A client uses the official SDK.
	client := openai.NewClient(option.WithBaseURL(e.base+"/v1/"), option.WithAPIKey(secret), option.WithMaxRetries(0))
	ctx := context.Background()
	models, err := client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range models.Data {
		names = append(names, m.ID)
	}
	if strings.Join(names, ",") != "gpt-test,gpt-fallback,echo" {
		t.Fatalf("models %v", names)
	}
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       "gpt-test",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("Hello?")},
		Temperature: openai.Float(0.2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != "Hello from upstream" || resp.Usage.PromptTokens != upstreamPrompt || resp.Usage.CompletionTokens != upstreamCompletion {
		t.Fatalf("completion %+v", resp)
	}
	if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Model != "gpt-test" {
		t.Fatalf("completion id %q model %q", resp.ID, resp.Model)
	}
	e.up.mu.Lock()
	sent := e.up.seen[len(e.up.seen)-1]
	e.up.mu.Unlock()
	if sent["model"] != "upstream-model-1" || sent["temperature"] != 0.2 {
		t.Fatalf("upstream got %v: want the upstream model and the client's other fields", sent)
	}
	echo, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "echo",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("ping pong")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if echo.Choices[0].Message.Content != "ping pong" || echo.Usage.CompletionTokens == 0 {
		t.Fatalf("echo %+v", echo)
	}

	// A revoked key stops working (within the one-second key cache).
	code, spare, _ := e.do("POST", "/v1/admin/accounts/"+accountID+"/keys", e.admin, map[string]string{"name": "spare"})
	if code != 201 {
		t.Fatalf("issue spare key: %d %v", code, spare)
	}
	if code, _, _ := e.do("GET", "/v1/models", spare["key"].(string), nil); code != 200 {
		t.Fatalf("spare key before revocation: %d", code)
	}
	if code, body, _ := e.do("DELETE", "/v1/admin/keys/"+spare["id"].(string), e.admin, nil); code != 200 || body["revoked"] != true {
		t.Fatalf("revoke: %d %v", code, body)
	}
	eventually(t, "revoked key refused", func() error {
		if code, _, _ := e.do("GET", "/v1/models", spare["key"].(string), nil); code != 401 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})

	// Errors are OpenAI error bodies, and a rejected request records nothing.
	before := countCompletionEvents(t, e)
	errorCases := []struct {
		name, token string
		body        []byte
		status      int
		code        string
	}{
		{"malformed JSON", secret, []byte(`{"model":`), 400, "invalid_json"},
		{"missing key", "", []byte(`{}`), 401, "missing_api_key"},
		{"bad key", "tg_notakey", []byte(`{}`), 401, "invalid_api_key"},
		{"unknown model", secret, []byte(`{"model":"gpt-nope","messages":[{"role":"user","content":"hi"}]}`), 404, "model_not_found"},
		{"body over the limit", secret, append(append([]byte(`{"model":"echo","messages":[{"role":"user","content":"`), bytes.Repeat([]byte("a"), 5<<20)...), []byte(`"}]}`)...), 413, "request_too_large"},
	}
	for _, c := range errorCases {
		code, body, _ := e.do("POST", "/v1/chat/completions", c.token, c.body)
		errObj, _ := body["error"].(map[string]any)
		if code != c.status || errObj == nil || errObj["code"] != c.code || errObj["message"] == "" || errObj["type"] == "" {
			t.Errorf("%s: %d %v, want %d with code %s", c.name, code, body, c.status, c.code)
		}
	}
	var apiErr *openai.Error
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-nope", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("SDK error for an unknown model: %v", err)
	}
	if after := countCompletionEvents(t, e); after != before {
		t.Errorf("rejected requests appended %d events", after-before)
	}

	// The same request, queued: 202 at once, a worker runs it.
	e.up.delay.Store(int64(300 * time.Millisecond))
	callsBefore := e.up.calls.Load()
	code, job, hdr := e.do("POST", "/v1/chat/completions", secret,
		[]byte(`{"model":"gpt-test","messages":[{"role":"user","content":"later"}]}`), "Prefer", "respond-async")
	if code != 202 || job["status"] != "queued" || hdr.Get("Location") != "/v1/jobs/"+job["id"].(string) {
		t.Fatalf("async: %d %v %v", code, job, hdr)
	}
	jobID := job["id"].(string)
	var sawRunning bool
	eventually(t, "job done", func() error {
		code, j, _ := e.do("GET", "/v1/jobs/"+jobID, secret, nil)
		if code != 200 {
			return fmt.Errorf("GET job: %d %v", code, j)
		}
		switch j["status"] {
		case "running":
			sawRunning = true
		case "succeeded":
			r := j["response"].(map[string]any)
			if r["id"] != jobID || r["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"] != "Hello from upstream" {
				t.Fatalf("job response %v", r)
			}
			return nil
		}
		return fmt.Errorf("status %v", j["status"])
	})
	e.up.delay.Store(0)
	if !sawRunning {
		t.Error("never saw the job running")
	}
	if got := e.up.calls.Load() - callsBefore; got != 1 {
		t.Errorf("async job called the provider %d times", got)
	}
	// A synchronous request that outlives the response deadline is
	// answered 202 with its job; the work goes on and its result is kept.
	e.up.delay.Store(int64(1500 * time.Millisecond))
	code, slow, hdr := e.do("POST", "/v1/chat/completions", secret, []byte(`{"model":"gpt-test","messages":[{"role":"user","content":"slow"}]}`))
	e.up.delay.Store(0)
	if code != 202 || slow["status"] != "running" || hdr.Get("Location") != "/v1/jobs/"+slow["id"].(string) {
		t.Fatalf("past the deadline: %d %v", code, slow)
	}
	eventually(t, "slow job done", func() error {
		_, j, _ := e.do("GET", "/v1/jobs/"+slow["id"].(string), secret, nil)
		if j["status"] != "succeeded" {
			return fmt.Errorf("status %v", j["status"])
		}
		return nil
	})
	if code, _, _ := e.do("GET", "/v1/jobs/chatcmpl-doesnotexist", secret, nil); code != 404 {
		t.Errorf("unknown job: %d", code)
	}

	// Usage: three completions, priced from the table.
	wantUpstreamCost := int64(3 * (upstreamPrompt*2500 + upstreamCompletion*10000))
	eventually(t, "usage", func() error {
		code, u, _ := e.do("GET", "/v1/usage?group_by=model", secret, nil)
		if code != 200 {
			return fmt.Errorf("%d %v", code, u)
		}
		rows := map[string]map[string]any{}
		for _, r := range u["data"].([]any) {
			row := r.(map[string]any)
			rows[row["group"].(string)] = row
		}
		g := rows["gpt-test"]
		if g == nil || g["requests"] != float64(3) || g["cost_nano_usd"] != float64(wantUpstreamCost) || rows["echo"] == nil {
			return fmt.Errorf("usage %v", u)
		}
		if g["cost_usd"] != fmt.Sprintf("0.%09d", wantUpstreamCost) || g["prompt_tokens"] != float64(3*upstreamPrompt) {
			return fmt.Errorf("usage row %v", g)
		}
		return nil
	})
	for _, by := range []string{"day", "key", ""} {
		code, u, _ := e.do("GET", "/v1/usage?group_by="+by+"&from="+time.Now().UTC().Format(time.DateOnly), secret, nil)
		if code != 200 || u["total"].(map[string]any)["requests"] != float64(4) {
			t.Errorf("usage group_by=%q: %d %v", by, code, u)
		}
	}

	// The quota read model charged the account's daily budget exactly what
	// the ledger says it spent (every reservation settled).
	_, total, _ := e.do("GET", "/v1/usage?from="+time.Now().UTC().Format(time.DateOnly), secret, nil)
	spent := total["total"].(map[string]any)["cost_nano_usd"].(float64)
	eventually(t, "daily budget charged", func() error {
		uses, err := quotastate.BudgetUseByPlan(ctx, e.srv.Pool, "day:"+time.Now().UTC().Format(time.DateOnly))
		if err != nil {
			return err
		}
		for _, u := range uses {
			if u.Plan == "free" && u.Accounts == 1 && float64(u.Used) == spent {
				return nil
			}
		}
		return fmt.Errorf("budget use %+v, ledger spent %v", uses, spent)
	})

	// Billing: every billable token reaches Stripe once, as meter events
	// identified by their billing record.
	var totalTokens int64
	for _, ev := range allEvents(t, e) {
		if ev.Type == events.TypeCompletionSucceeded {
			var s events.CompletionSucceeded
			if err := json.Unmarshal(ev.Data, &s); err != nil {
				t.Fatal(err)
			}
			totalTokens += s.Usage.TotalTokens
		}
	}
	eventually(t, "usage reported to Stripe", func() error {
		var sum int64
		seen := map[string]bool{}
		for _, r := range e.stripe.RequestsTo("POST", "/v1/billing/meter_events") {
			id := r.Form.Get("identifier")
			if seen[id] {
				t.Fatalf("identifier %s sent twice", id)
			}
			seen[id] = true
			if !strings.HasPrefix(id, "br_") || r.Form.Get("payload[stripe_customer_id]") != "cus_e2etest" || r.Form.Get("event_name") == "" {
				t.Fatalf("meter event %v", r.Form)
			}
			var v int64
			fmt.Sscan(r.Form.Get("payload[value]"), &v)
			sum += v
		}
		if sum != totalTokens {
			return fmt.Errorf("reported %d tokens of %d", sum, totalTokens)
		}
		return nil
	})
	eventually(t, "usage_reported recorded", func() error {
		n := 0
		for _, ev := range allEvents(t, e) {
			if ev.Type == events.TypeBillingUsageReported {
				n++
			}
		}
		if n != len(e.stripe.RequestsTo("POST", "/v1/billing/meter_events")) {
			return fmt.Errorf("%d usage_reported events", n)
		}
		return nil
	})

	// Every event the run produced matches its JSON Schema.
	evs := allEvents(t, e)
	types := map[string]bool{}
	for _, ev := range evs {
		types[ev.Type] = true
		env, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.validate.Validate(ev.Type, ev.SchemaVersion, env, ev.Data); err != nil {
			t.Errorf("event %s %s: %v", ev.Type, ev.EventID, err)
		}
	}
	for _, want := range []string{events.TypeAccountCreated, events.TypeBillingCustomerLinked, events.TypeAPIKeyIssued,
		events.TypeCompletionRequested, events.TypeCompletionStarted, events.TypeCompletionSucceeded,
		events.TypeBillingRecordClosed, events.TypeBillingUsageReported} {
		if !types[want] {
			t.Errorf("no %s event was produced", want)
		}
	}

	// The live read models equal a rebuild from position 0, once the
	// projector has caught up with the log.
	eventually(t, "rebuild equals live", func() error {
		if _, err := projections.Rebuild(ctx, e.srv.Pool, e.store, "rebuild", 500, readModels(t), slog.New(slog.DiscardHandler)); err != nil {
			// The log, to diagnose an order the projectors did not expect.
			for _, ev := range allEvents(t, e) {
				if ev.Type != events.TypeCompletionRequested {
					t.Logf("event %d %s %s %s", ev.Position, ev.Type, ev.StreamID, ev.Data)
				}
			}
			return err
		}
		diffs, err := projections.Compare(ctx, e.srv.Pool, projections.LiveSchema, "rebuild")
		if err != nil {
			return err
		}
		if len(diffs) > 0 {
			return fmt.Errorf("differences: %v", diffs)
		}
		return nil
	})

	// Metrics are exposed.
	req, _ := http.NewRequest("GET", e.base+"/metrics", nil)
	mresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, m := range []string{`tollgate_http_requests_total{route="/v1/chat/completions",status="200"}`, "tollgate_completions_total", "tollgate_eventstore_appends_total"} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func readModels(t *testing.T) func(string) []projections.Projector {
	cfg, err := config.Parse(fmt.Appendf(nil, configYAML, "http://unused"))
	if err != nil {
		t.Fatal(err)
	}
	return server.ReadModels(cfg)
}

func allEvents(t *testing.T, e *env) []events.Envelope {
	t.Helper()
	var out []events.Envelope
	var cur pgstore.Cursor
	for {
		evs, next, err := e.store.ReadAll(context.Background(), cur, 1000, pgstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, evs...)
		if len(evs) < 1000 {
			return out
		}
		cur = next
	}
}

// countCompletionEvents counts completion events; other roles (billing)
// append events of their own meanwhile.
func countCompletionEvents(t *testing.T, e *env) int {
	n := 0
	for _, ev := range allEvents(t, e) {
		if strings.HasPrefix(ev.Type, "completion.") {
			n++
		}
	}
	return n
}
