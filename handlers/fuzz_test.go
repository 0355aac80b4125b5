package handlers

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
)

// Fuzz targets over the real HTTP API on PostgreSQL. Each worker process
// builds one environment (its own database) and sends every input through
// it. Seeds: testdata/fuzz/FuzzXxx (the hostile inputs of issue 8, run by
// a plain go test too). Run one for longer with, e.g.:
//
//	go test ./handlers -run '^$' -fuzz '^FuzzChatBody$' -fuzztime 60s

// paramCodes are the error codes that are about one parameter: a body
// with one of them must name it.
var paramCodes = map[string]bool{
	"invalid_value": true, "invalid_type": true, "missing_required_parameter": true,
	"unsupported_parameter": true, "model_not_found": true, "model_not_in_plan": true, "callbacks_disabled": true,
}

// fuzzCheck fails on a 5xx, a 4xx without an OpenAI error body, or a
// parameter error that does not name its parameter.
func fuzzCheck(t *testing.T, what string, r hostileResponse) {
	t.Helper()
	hostileCheck(t, what, r)
	if r.status >= 400 && paramCodes[r.code()] && r.param() == "" {
		t.Fatalf("%s: %d %s names no parameter: %s", what, r.status, r.code(), r.raw)
	}
}

// unfinished counts completions requested but neither succeeded nor
// failed: a synchronous request must not change it once answered (a
// refused request leaves no partial completion behind).
func (e *hostileEnv) unfinished(t *testing.T) int {
	t.Helper()
	var n int
	err := e.pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE type = $1)
		- count(*) FILTER (WHERE type IN ($2, $3)) FROM events`,
		events.TypeCompletionRequested, events.TypeCompletionSucceeded, events.TypeCompletionFailed).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// FuzzChatBody sends each input as the body of POST /v1/chat/completions:
// never a 5xx, every 4xx an OpenAI error body naming the parameter when it
// is about one, and every request either refused with nothing recorded or
// recorded with its outcome.
func FuzzChatBody(f *testing.F) {
	e := newHostileEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		before := e.unfinished(t)
		r := e.do(t, "POST", "/v1/chat/completions", e.key, body, http.Header{"Content-Type": {"application/json"}})
		fuzzCheck(t, "chat", r)
		if n := e.unfinished(t) - before; n != 0 {
			t.Fatalf("%d completions left without an outcome after a %d: %s", n, r.status, r.raw)
		}
	})
}

// FuzzQueryParams sends each input as the query parameters and path ids
// of the read endpoints: /v1/usage, /v1/jobs, /v1/jobs/{id}(/events) and
// the admin explain endpoint.
func FuzzQueryParams(f *testing.F) {
	e := newHostileEnv(f)
	ok := e.do(f, "POST", "/v1/chat/completions", e.key, []byte(hostileChat(`"seed"`)), nil)
	if ok.status != http.StatusOK {
		f.Fatalf("seed job: %d %s", ok.status, ok.raw)
	}
	f.Fuzz(func(t *testing.T, from, to, groupBy, limit, id, wait, include string) {
		q := url.Values{}
		for k, v := range map[string]string{"from": from, "to": to, "group_by": groupBy} {
			if v != "" {
				q.Set(k, v)
			}
		}
		fuzzCheck(t, "usage", e.do(t, "GET", "/v1/usage?"+q.Encode(), e.key, nil, nil))
		fuzzCheck(t, "jobs", e.do(t, "GET", "/v1/jobs?"+url.Values{"limit": {limit}}.Encode(), e.key, nil, nil))
		job := "/v1/jobs/" + url.PathEscape(id)
		if id == "" {
			job = "/v1/jobs/x"
		}
		start := time.Now()
		fuzzCheck(t, "job", e.do(t, "GET", job+"?"+url.Values{"wait": {wait}}.Encode(), e.key, nil, nil))
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("GET %s?wait=%q took %s: only unfinished jobs wait", job, wait, d)
		}
		fuzzCheck(t, "job events", e.do(t, "GET", job+"/events?"+url.Values{"include": {include}}.Encode(), e.key, nil, nil))
		fuzzCheck(t, "explain", e.do(t, "GET", "/v1/admin/billing/explain?"+url.Values{"period": {from}, "account": {id}}.Encode(), testAdmin, nil, nil))
	})
}

// fuzzCustomer is the Stripe customer of the webhook fuzz account, so
// that events naming it reach the account's decisions.
const fuzzCustomer = "cus_FuzzSeed"

// FuzzStripeWebhook signs each input with the configured secret, so that
// it gets past the signature, and posts it to /v1/webhooks/stripe: never
// a 5xx (Stripe would retry a 5xx for days).
func FuzzStripeWebhook(f *testing.F) {
	e := newHostileEnv(f)
	acc := e.do(f, "POST", "/v1/admin/accounts", testAdmin, []byte(`{"name":"Fuzz","plan":"free","stripe_customer_id":"`+fuzzCustomer+`"}`), nil)
	if acc.status != http.StatusCreated {
		f.Fatalf("account with a customer: %d %s", acc.status, acc.raw)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r := e.do(t, "POST", "/v1/webhooks/stripe", "", payload, hostileSigned(payload, hostileWebhookSecret, time.Now()))
		fuzzCheck(t, "webhook", r)
	})
}
