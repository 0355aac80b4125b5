package stripetest_test

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/stripetest"
)

func TestMain(m *testing.M) { os.Exit(stripetest.Main(m)) }

// Shared gives every test of a package run the same stripe-mock; Start a
// test its own.
func TestSharedIsOnePerPackageRun(t *testing.T) {
	t.Parallel()
	a, b := stripetest.Shared(t), stripetest.Shared(t)
	if a != b {
		t.Errorf("two shared stripe-mocks in one package run: %s and %s", a, b)
	}
	if status, body := post(t, a, "/v1/billing/meter_events", meterEvent()); status != http.StatusOK {
		t.Errorf("shared stripe-mock: %d %s", status, body)
	}
	if own := stripetest.Start(t); own == a {
		t.Errorf("Start returned the shared stripe-mock %s", a)
	}
}

func post(t *testing.T, base, path string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+stripetest.TestSecretKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func meterEvent() url.Values {
	return url.Values{
		"event_name":                  {"tollgate_tokens"},
		"identifier":                  {"br_1"},
		"timestamp":                   {"1700000000"},
		"payload[stripe_customer_id]": {"cus_1"},
		"payload[value]":              {"42"},
	}
}

func TestRecorderRecordsWhatReachesStripeMock(t *testing.T) {
	t.Parallel()
	base := stripetest.Shared(t)
	proxy, rec := stripetest.NewRecorder(t, base)

	status, body := post(t, proxy, "/v1/billing/meter_events", meterEvent())
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	if !strings.Contains(body, `"billing.meter_event"`) {
		t.Errorf("body is not a meter event: %s", body)
	}
	got := rec.RequestsTo(http.MethodPost, "/v1/billing/meter_events")
	if len(got) != 1 {
		t.Fatalf("recorded %d meter event requests, want 1: %+v", len(got), rec.Requests())
	}
	r := got[0]
	if r.Status != http.StatusOK || r.Form.Get("identifier") != "br_1" || r.Form.Get("payload[value]") != "42" ||
		r.Form.Get("payload[stripe_customer_id]") != "cus_1" || r.Form.Get("event_name") != "tollgate_tokens" {
		t.Errorf("recorded %+v", r)
	}

	rec.Reset()
	if n := len(rec.Requests()); n != 0 {
		t.Errorf("after Reset: %d requests", n)
	}
}

func TestRecorderIntercept(t *testing.T) {
	t.Parallel()
	base := stripetest.Shared(t)
	proxy, rec := stripetest.NewRecorder(t, base)
	rec.Intercept(func(r stripetest.Request) (stripetest.Response, bool) {
		if r.Form.Get("identifier") != "br_dup" {
			return stripetest.Response{}, false
		}
		return stripetest.Response{Status: http.StatusBadRequest, Body: `{"error":{"type":"invalid_request_error","message":"An event already exists with identifier br_dup."}}`}, true
	})
	f := meterEvent()
	f.Set("identifier", "br_dup")
	if status, body := post(t, proxy, "/v1/billing/meter_events", f); status != http.StatusBadRequest || !strings.Contains(body, "already exists") {
		t.Errorf("intercepted: %d %s", status, body)
	}
	if status, body := post(t, proxy, "/v1/billing/meter_events", meterEvent()); status != http.StatusOK {
		t.Errorf("passed through: %d %s", status, body)
	}
	reqs := rec.Requests()
	if len(reqs) != 2 || reqs[0].Status != http.StatusBadRequest || reqs[1].Status != http.StatusOK {
		t.Errorf("recorded %+v", reqs)
	}
}

func TestStripeMockRejectsInvalidRequests(t *testing.T) {
	t.Parallel()
	base := stripetest.Shared(t)
	f := meterEvent()
	f.Del("event_name")
	if status, body := post(t, base, "/v1/billing/meter_events", f); status != http.StatusBadRequest {
		t.Errorf("missing event_name: %d %s", status, body)
	}
}
