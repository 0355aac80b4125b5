package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
)

// hostileCase is one hostile request and what it must get: a 4xx naming
// the parameter, with nothing appended to the event store.
type hostileCase struct {
	name   string
	method string
	path   string // {acc}, {key} and {job} are replaced by real ids
	body   string
	admin  bool
	status int
	param  string
	code   string
}

func hostileChat(content string) string {
	return `{"model":"echo","messages":[{"role":"user","content":` + content + `}]}`
}

func hostileChatCases() []hostileCase {
	chat := func(name, body string, status int, param, code string) hostileCase {
		return hostileCase{name: "chat/" + name, method: "POST", path: "/v1/chat/completions", body: body, status: status, param: param, code: code}
	}
	return []hostileCase{
		chat("raw 0xFF in content", hostileChat("\"a\xffb\""), 400, "messages[0].content", "invalid_json"),
		chat("truncated UTF-8 in content", hostileChat("\"\xe2\x82\""), 400, "messages[0].content", "invalid_json"),
		chat("UTF-8 encoded surrogate in content", hostileChat("\"\xed\xa0\x80\""), 400, "messages[0].content", "invalid_json"),
		chat("lone high surrogate in content", hostileChat(`"\ud800"`), 400, "messages[0].content", "invalid_value"),
		chat("lone low surrogate in content", hostileChat(`"x\udc00y"`), 400, "messages[0].content", "invalid_value"),
		chat("high surrogate then a letter", hostileChat(`"\ud800\u0041"`), 400, "messages[0].content", "invalid_value"),
		chat("two high surrogates", hostileChat(`"\ud83d\ud83d"`), 400, "messages[0].content", "invalid_value"),
		chat("lone surrogate in a content part", `{"model":"echo","messages":[{"role":"user","content":[{"type":"text","text":"\udfff"}]}]}`,
			400, "messages[0].content[0].text", "invalid_value"),
		chat("lone surrogate in a tool", `{"model":"echo","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","description":"\ud800"}}]}`,
			400, "tools[0].function.description", "invalid_value"),
		chat("raw 0xFF in an object key", `{"model":"echo","messages":[{"role":"user","content":"x","`+"\xff"+`":1}]}`, 400, "messages[0]", "invalid_json"),
		chat("raw 0xFF in the model", `{"model":"ech`+"\xff"+`","messages":[{"role":"user","content":"x"}]}`, 400, "model", "invalid_json"),
		chat("NUL in the model", `{"model":"echo\u0000","messages":[{"role":"user","content":"x"}]}`, 400, "model", "invalid_value"),
		chat("raw NUL byte in a string", hostileChat("\"a\x00b\""), 400, "", "invalid_json"),
		chat("model is a number", `{"model":1,"messages":[{"role":"user","content":"x"}]}`, 400, "model", "invalid_type"),
		chat("messages is an object", `{"model":"echo","messages":{}}`, 400, "messages", "invalid_type"),
		chat("stream is a string", `{"model":"echo","messages":[{"role":"user","content":"x"}],"stream":"yes"}`, 400, "stream", "invalid_type"),
		chat("callback_url with NUL", `{"model":"echo","messages":[{"role":"user","content":"x"}],"callback_url":"https://example.com/\u0000"}`, 400, "callback_url", "invalid_value"),
		chat("callback_url lone surrogate", `{"model":"echo","messages":[{"role":"user","content":"x"}],"callback_url":"https://example.com/\ud800"}`, 400, "callback_url", "invalid_value"),
		chat("callback_url is a number", `{"model":"echo","messages":[{"role":"user","content":"x"}],"callback_url":7}`, 400, "callback_url", "invalid_type"),
		chat("n zero", `{"model":"echo","messages":[{"role":"user","content":"x"}],"n":0}`, 400, "n", "invalid_value"),
		chat("n huge", `{"model":"echo","messages":[{"role":"user","content":"x"}],"n":1000000000}`, 400, "n", "invalid_value"),
		chat("max_tokens negative", `{"model":"echo","messages":[{"role":"user","content":"x"}],"max_tokens":-1}`, 400, "max_tokens", "invalid_value"),
		chat("max_completion_tokens fractional", `{"model":"echo","messages":[{"role":"user","content":"x"}],"max_completion_tokens":1.5}`, 400, "max_completion_tokens", "invalid_type"),
		chat("truncated body", `{"model":"echo","messages":[`, 400, "", "invalid_json"),
		chat("huge max_tokens", `{"model":"echo","messages":[{"role":"user","content":"x"}],"max_tokens":1e300}`, 400, "max_tokens", "invalid_type"),
	}
}

func hostileQueryCases() []hostileCase {
	get := func(name, path string, param string) hostileCase {
		return hostileCase{name: "query/" + name, method: "GET", path: path, status: 400, param: param, code: "invalid_value"}
	}
	return []hostileCase{
		get("usage from year 0", "/v1/usage?from=0000-01-01", "from"),
		get("usage to year 0", "/v1/usage?to=0000-12-31T23:59:59Z", "to"),
		get("usage from year 0 after the offset", "/v1/usage?from=0001-01-01T00:00:00%2B01:00", "from"),
		get("usage from huge Unix", "/v1/usage?from=99999999999999", "from"),
		get("usage from negative Unix", "/v1/usage?from=-99999999999999", "from"),
		get("usage to max int64", "/v1/usage?to=9223372036854775807", "to"),
		get("usage from NUL", "/v1/usage?from=%00", "from"),
		get("usage group_by NUL", "/v1/usage?group_by=%00", "group_by"),
		get("jobs huge limit", "/v1/jobs?limit=99999999999999999999999", "limit"),
		get("jobs limit NUL", "/v1/jobs?limit=%00", "limit"),
		get("job id NUL", "/v1/jobs/%00", "id"),
		get("job id 0xFF", "/v1/jobs/%FF", "id"),
		get("job id with a control character", "/v1/jobs/chatcmpl-%01x", "id"),
		get("job events id NUL", "/v1/jobs/%00/events", "id"),
		get("job events include NUL", "/v1/jobs/{job}/events?include=%00", "include"),
		get("job wait huge duration", "/v1/jobs/{job}?wait=9999999999h", "wait"),
		get("job wait NUL", "/v1/jobs/{job}?wait=%00", "wait"),
		{name: "billing/checkout plan NUL", method: "POST", path: "/v1/billing/checkout", body: `{"plan":"pro\u0000"}`, status: 400, param: "plan", code: "invalid_value"},
		{name: "billing/checkout plan lone surrogate", method: "POST", path: "/v1/billing/checkout", body: `{"plan":"\ud800"}`, status: 400, param: "plan", code: "invalid_value"},
		{name: "billing/checkout plan 0xFF", method: "POST", path: "/v1/billing/checkout", body: `{"plan":"` + "\xff" + `"}`, status: 400, param: "plan", code: "invalid_json"},
		{name: "billing/checkout plan is a list", method: "POST", path: "/v1/billing/checkout", body: `{"plan":[]}`, status: 400, param: "plan", code: "invalid_type"},
	}
}

func hostileAdminCases() []hostileCase {
	adm := func(name, method, path, body, param, code string) hostileCase {
		return hostileCase{name: "admin/" + name, method: method, path: path, body: body, admin: true, status: 400, param: param, code: code}
	}
	return []hostileCase{
		adm("account name NUL", "POST", "/v1/admin/accounts", `{"name":"a\u0000b"}`, "name", "invalid_value"),
		adm("account name control", "POST", "/v1/admin/accounts", `{"name":"a\u001bb"}`, "name", "invalid_value"),
		adm("account name 0xFF", "POST", "/v1/admin/accounts", `{"name":"a`+"\xff"+`"}`, "name", "invalid_json"),
		adm("account name lone surrogate", "POST", "/v1/admin/accounts", `{"name":"\ud800"}`, "name", "invalid_value"),
		adm("account email NUL", "POST", "/v1/admin/accounts", `{"name":"a","email":"a@b\u0000"}`, "email", "invalid_value"),
		adm("account plan NUL", "POST", "/v1/admin/accounts", `{"name":"a","plan":"free\u0000"}`, "plan", "invalid_value"),
		adm("account stripe customer NUL", "POST", "/v1/admin/accounts", `{"name":"a","stripe_customer_id":"cus_\u0000"}`, "stripe_customer_id", "invalid_value"),
		adm("account name is a number", "POST", "/v1/admin/accounts", `{"name":7}`, "name", "invalid_type"),
		adm("get account id NUL", "GET", "/v1/admin/accounts/%00", "", "id", "invalid_value"),
		adm("get account id 0xFF", "GET", "/v1/admin/accounts/%FF", "", "id", "invalid_value"),
		adm("account quota id NUL", "GET", "/v1/admin/accounts/%00/quota", "", "id", "invalid_value"),
		adm("key name NUL", "POST", "/v1/admin/accounts/{acc}/keys", `{"name":"k\u0000"}`, "name", "invalid_value"),
		adm("key name lone surrogate", "POST", "/v1/admin/accounts/{acc}/keys", `{"name":"\udc00"}`, "name", "invalid_value"),
		adm("key for account id NUL", "POST", "/v1/admin/accounts/%00/keys", `{"name":"k"}`, "id", "invalid_value"),
		adm("revoke key id NUL", "DELETE", "/v1/admin/keys/%00", "", "id", "invalid_value"),
		adm("patch account id NUL", "PATCH", "/v1/admin/accounts/%00", `{"plan":"pro"}`, "id", "invalid_value"),
		adm("patch account plan NUL", "PATCH", "/v1/admin/accounts/{acc}", `{"plan":"pro\u0000"}`, "plan", "invalid_value"),
		adm("patch account budget NUL", "PATCH", "/v1/admin/accounts/{acc}", `{"limits":{"daily_budget_usd":"1\u0000"}}`, "limits.daily_budget_usd", "invalid_value"),
		adm("patch account rpm negative", "PATCH", "/v1/admin/accounts/{acc}", `{"limits":{"requests_per_minute":-1}}`, "limits.requests_per_minute", "invalid_value"),
		adm("patch account plan with a bad limit changes nothing", "PATCH", "/v1/admin/accounts/{acc}", `{"plan":"pro","limits":{"requests_per_minute":-1}}`, "limits.requests_per_minute", "invalid_value"),
		adm("patch account rpm huge", "PATCH", "/v1/admin/accounts/{acc}", `{"limits":{"requests_per_minute":1e40}}`, "limits.requests_per_minute", "invalid_type"),
		adm("patch account budget huge", "PATCH", "/v1/admin/accounts/{acc}", `{"limits":{"monthly_budget_usd":"99999999999999999999"}}`, "limits.monthly_budget_usd", "invalid_value"),
		adm("patch account budget negative", "PATCH", "/v1/admin/accounts/{acc}", `{"limits":{"monthly_budget_usd":"-5"}}`, "limits.monthly_budget_usd", "invalid_value"),
		adm("patch key id NUL", "PATCH", "/v1/admin/keys/%00", `{"suspended":true}`, "id", "invalid_value"),
		adm("patch key tpm negative", "PATCH", "/v1/admin/keys/{key}", `{"limits":{"tokens_per_minute":-7}}`, "limits.tokens_per_minute", "invalid_value"),
		adm("patch key lone surrogate", "PATCH", "/v1/admin/keys/{key}", `{"limits":{"daily_budget_usd":"\ud800"}}`, "limits.daily_budget_usd", "invalid_value"),
		adm("explain account NUL", "GET", "/v1/admin/billing/explain?period=2026-11&account=%00", "", "account", "invalid_value"),
		adm("explain account 0xFF", "GET", "/v1/admin/billing/explain?period=2026-11&account=%FF", "", "account", "invalid_value"),
		adm("reconciliation period NUL", "GET", "/v1/admin/billing/reconciliation?period=%00", "", "period", "invalid_value"),
	}
}

// TestHostileInputIsRefusedNamingTheParameter sends each hostile input
// through the real HTTP API on PostgreSQL: each gets a 4xx with an OpenAI
// error body naming the parameter, and appends no event.
func TestHostileInputIsRefusedNamingTheParameter(t *testing.T) {
	t.Parallel()
	e := newHostileEnv(t)
	ok := e.do(t, "POST", "/v1/chat/completions", e.key, []byte(hostileChat(`"hello"`)), nil)
	var job struct{ ID string }
	if ok.status != http.StatusOK || json.Unmarshal(ok.raw, &job) != nil || job.ID == "" {
		t.Fatalf("a plain chat request: %d %s", ok.status, ok.raw)
	}
	cases := append(append(hostileChatCases(), hostileQueryCases()...), hostileAdminCases()...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := strings.NewReplacer("{acc}", e.accountID, "{key}", e.keyID, "{job}", job.ID).Replace(c.path)
			token := e.key
			if c.admin {
				token = testAdmin
			}
			before := e.eventCount(t)
			r := e.do(t, c.method, path, token, []byte(c.body), nil)
			hostileCheck(t, c.name, r)
			if r.status != c.status || r.param() != c.param || r.code() != c.code {
				t.Errorf("%s %s: got %d param %q code %q, want %d param %q code %q: %s",
					c.method, c.path, r.status, r.param(), r.code(), c.status, c.param, c.code, r.raw)
			}
			if n := e.eventCount(t); n != before {
				t.Errorf("%d events appended by a refused request", n-before)
			}
		})
	}
}

// TestChatWithNULIsStoredLosslessly: \u0000 is text a provider takes, so
// a chat request carrying it is accepted, and the stored request is the
// one sent, escape for escape.
func TestChatWithNULIsStoredLosslessly(t *testing.T) {
	t.Parallel()
	e := newHostileEnv(t)
	body := hostileChat(`"before\u0000after \ud83d\ude00"`)
	r := e.do(t, "POST", "/v1/chat/completions", e.key, []byte(body), nil)
	if r.status != http.StatusOK {
		t.Fatalf("chat with \\u0000: %d %s", r.status, r.raw)
	}
	var job struct{ ID string }
	if err := json.Unmarshal(r.raw, &job); err != nil {
		t.Fatal(err)
	}
	_, evs, err := e.svc.CompletionHistory(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var req events.CompletionRequested
	if len(evs) == 0 || evs[0].Type != events.TypeCompletionRequested || json.Unmarshal(evs[0].Data, &req) != nil {
		t.Fatalf("history of %s: %+v", job.ID, evs)
	}
	var sent, stored any
	if err := json.Unmarshal([]byte(body), &sent); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(req.Request, &stored); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sent) != fmt.Sprint(stored) || !strings.Contains(fmt.Sprint(stored), "before\x00after \U0001F600") {
		t.Fatalf("stored request %s, sent %s", req.Request, body)
	}
}

// futureSignature is a Stripe-Signature header dated d from now.
func futureSignature(payload []byte, d time.Duration) http.Header {
	return hostileSigned(payload, hostileWebhookSecret, time.Now().Add(d))
}

// TestHostileInputInRangeIsAccepted: the edges of the ranges are served.
func TestHostileInputInRangeIsAccepted(t *testing.T) {
	t.Parallel()
	e := newHostileEnv(t)
	ok := e.do(t, "POST", "/v1/chat/completions", e.key, []byte(hostileChat(`"a surrogate pair: \ud83d\ude00, an escaped backslash \\ud800"`)), nil)
	var job struct{ ID string }
	if ok.status != http.StatusOK || json.Unmarshal(ok.raw, &job) != nil {
		t.Fatalf("chat with a surrogate pair: %d %s", ok.status, ok.raw)
	}
	for _, path := range []string{
		"/v1/usage?from=0001-01-01&to=9999-12-31",
		"/v1/usage?from=-62135596800&to=253402300799",
		"/v1/usage?from=1",
		"/v1/jobs?limit=100",
		"/v1/jobs/" + job.ID + "?wait=99999999999999999",
		"/v1/jobs/" + job.ID + "?wait=9223372036854775807",
		"/v1/jobs/" + job.ID + "/events?include=bodies",
	} {
		if r := e.do(t, "GET", path, e.key, nil, nil); r.status != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, r.status, r.raw)
		}
	}
	if r := e.do(t, "GET", "/v1/jobs/chatcmpl-nosuchjob", e.key, nil, nil); r.status != http.StatusNotFound || r.code() != "job_not_found" {
		t.Errorf("unknown job: %d %s", r.status, r.raw)
	}
}

// hostileStripeEvent is a Stripe event for the env's account whose object is obj.
func hostileStripeEvent(id, typ string, created int64, obj string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":%q,"api_version":"2023-10-16","created":%d,"livemode":false,"pending_webhooks":1,"data":{"object":%s}}`,
		id, typ, created, obj))
}

// TestHostileWebhooksAreRefusedNamingTheField: correctly signed Stripe
// events whose fields PostgreSQL cannot store get a 400 naming the field
// and record nothing; so do signatures dated beyond the tolerance in the
// future.
func TestHostileWebhooksAreRefusedNamingTheField(t *testing.T) {
	t.Parallel()
	e := newHostileEnv(t)
	now := time.Now().Unix()
	sub := func(customer, status, price string) string {
		return fmt.Sprintf(`{"id":"sub_H1","object":"subscription","customer":%s,"status":%s,"items":{"data":[{"price":{"id":%s}}]},"metadata":{"account_id":%q}}`,
			customer, status, price, e.accountID)
	}
	cases := []struct {
		name, body, param, code string
		sig                     http.Header
	}{
		{"customer NUL", string(hostileStripeEvent("evt_H1", "customer.subscription.updated", now, sub(`"cus_\u0000"`, `"active"`, `"price_1"`))),
			"data.object.customer", "invalid_payload", nil},
		{"status control", string(hostileStripeEvent("evt_H2", "customer.subscription.updated", now, sub(`"cus_H"`, `"act\u0007ive"`, `"price_1"`))),
			"data.object.status", "invalid_payload", nil},
		{"price NUL", string(hostileStripeEvent("evt_H3", "customer.subscription.updated", now, sub(`"cus_H"`, `"active"`, `"\u0000"`))),
			"data.object.items.data[0].price.id", "invalid_payload", nil},
		{"type NUL", strings.Replace(string(hostileStripeEvent("evt_H4", "invoice.paid", now, `{"id":"in_1","object":"invoice"}`)), "invoice.paid", `invoice.\u0000`, 1),
			"type", "invalid_payload", nil},
		{"api_version NUL", strings.Replace(string(hostileStripeEvent("evt_H5", "product.created", now, `{"id":"prod_1","object":"product"}`)), "2023-10-16", `2023\u0000`, 1),
			"api_version", "invalid_payload", nil},
		{"invoice id NUL", string(hostileStripeEvent("evt_H6", "invoice.paid", now, `{"id":"in_\u0000","object":"invoice","customer":"cus_H"}`)),
			"data.object.id", "invalid_payload", nil},
		{"plan metadata NUL", string(hostileStripeEvent("evt_H7", "checkout.session.completed", now,
			fmt.Sprintf(`{"id":"cs_1","object":"checkout.session","mode":"subscription","subscription":"sub_1","client_reference_id":%q,"metadata":{"plan":"pro\u0000"}}`, e.accountID))),
			"data.object.metadata.plan", "invalid_payload", nil},
		{"created after 9999", string(hostileStripeEvent("evt_H8", "product.created", 253402300800, `{"id":"prod_1","object":"product"}`)),
			"created", "invalid_payload", nil},
		{"created max int64", string(hostileStripeEvent("evt_H9", "product.created", 9223372036854775807, `{"id":"prod_1","object":"product"}`)),
			"created", "invalid_payload", nil},
		{"event id NUL", strings.Replace(string(hostileStripeEvent("evt_H10", "product.created", now, `{"id":"prod_1","object":"product"}`)), "evt_H10", `evt_\u0000`, 1),
			"", "invalid_payload", nil},
		{"signed an hour ahead", string(hostileStripeEvent("evt_HF1", "product.created", now, `{"id":"prod_1","object":"product"}`)),
			"", "invalid_signature", futureSignature(hostileStripeEvent("evt_HF1", "product.created", now, `{"id":"prod_1","object":"product"}`), time.Hour)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := c.sig
			if h == nil {
				h = hostileSigned([]byte(c.body), hostileWebhookSecret, time.Now())
			}
			before := e.eventCount(t)
			r := e.do(t, "POST", "/v1/webhooks/stripe", "", []byte(c.body), h)
			hostileCheck(t, c.name, r)
			if r.status != http.StatusBadRequest || r.param() != c.param || r.code() != c.code {
				t.Errorf("got %d param %q code %q, want 400 param %q code %q: %s", r.status, r.param(), r.code(), c.param, c.code, r.raw)
			}
			if n := e.eventCount(t); n != before {
				t.Errorf("%d events appended by a refused webhook", n-before)
			}
		})
	}
}

// TestHostileRequestIDIsStored: X-Request-Id becomes the correlation id
// stored with every event of the request. Go's server refuses control
// characters in a header (400 before any handler); bytes that are not
// UTF-8 reach the handler, and the request still succeeds (the metadata's
// JSON encoding turns them into U+FFFD).
func TestHostileRequestIDIsStored(t *testing.T) {
	t.Parallel()
	e := newHostileEnv(t)
	r := e.doRawHeader(t, "/v1/chat/completions", e.key, []byte(hostileChat(`"hi"`)), "X-Request-Id", "req-\xff\xfe")
	if r.status != http.StatusOK {
		t.Fatalf("X-Request-Id with bytes that are not UTF-8: %d %s", r.status, r.raw)
	}
}
