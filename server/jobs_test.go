package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/callbacks"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llmtest"
)

const cbSecret = "whsec_jobs_test_0123456789"

type jobsEnv struct {
	t     *testing.T
	base  string
	admin string
}

func (e *jobsEnv) do(method, path, token string, body any, headers ...string) (int, map[string]any) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.base+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: %q: %v", method, path, raw, err)
	}
	return resp.StatusCode, out
}

// key creates an account on the free plan and returns a key of it.
func (e *jobsEnv) key(name string) string {
	e.t.Helper()
	st, acc := e.do("POST", "/v1/admin/accounts", e.admin, map[string]any{"name": name, "email": name + "@x.test", "plan": "free"})
	if st != 200 && st != 201 {
		e.t.Fatalf("create account: %d %v", st, acc)
	}
	st, k := e.do("POST", "/v1/admin/accounts/"+acc["id"].(string)+"/keys", e.admin, map[string]any{"name": "k"})
	if st != 200 && st != 201 {
		e.t.Fatalf("issue key: %d %v", st, k)
	}
	return k["key"].(string)
}

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

// Async jobs through the whole server: a callback_url never reaches the
// provider, ?wait= returns the finished job, the callback arrives signed
// and is recorded, and the timeline tells the story without the prompt.
func TestAsyncJobWaitCallbackAndTimeline(t *testing.T) {
	t.Parallel()
	up := llmtest.NewUpstream(t, 0)
	type delivery struct {
		body []byte
		sig  string
		job  string
	}
	deliveries := make(chan delivery, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		deliveries <- delivery{b, r.Header.Get(callbacks.SignatureHeader), r.Header.Get(callbacks.JobIDHeader)}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()

	_, e := startServer(t, up.URL, "jobs: {reaper_interval: 1s, callbacks: {allow_private_networks: true, initial_backoff: 100ms, max_backoff: 200ms}}",
		map[string]string{"TOLLGATE_INSTANCE_ID": "jobs", "TOLLGATE_CALLBACK_SECRET": cbSecret})
	k1, k2 := e.key("acme"), e.key("other")

	// Edge validation of callback_url and wait.
	for _, bad := range []any{"ftp://x.example/", "https://user:pw@x.example/", 42} {
		st, body := e.do("POST", "/v1/chat/completions", k1, map[string]any{"model": "m", "messages": []any{map[string]any{"role": "user", "content": "hi"}}, "callback_url": bad}, "Prefer", "respond-async")
		if st != 400 || body["error"].(map[string]any)["param"] != "callback_url" {
			t.Errorf("callback_url %v: %d %v", bad, st, body)
		}
	}

	cbURL := recv.URL + "/tollgate?x=1"
	st, job := e.do("POST", "/v1/chat/completions", k1, map[string]any{
		"model": "m", "callback_url": cbURL, "messages": []any{map[string]any{"role": "user", "content": "secret prompt"}},
	}, "Prefer", "respond-async")
	if st != http.StatusAccepted {
		t.Fatalf("async request: %d %v", st, job)
	}
	id := job["id"].(string)
	if cb, _ := job["callback"].(map[string]any); cb["url"] != cbURL || cb["status"] != "pending" {
		t.Errorf("202 job callback = %v", job["callback"])
	}
	if st, body := e.do("GET", "/v1/jobs/"+id+"?wait=forever", k1, nil); st != 400 {
		t.Errorf("wait=forever: %d %v", st, body)
	}
	// Long poll: answers with the finished job (the wait is far longer
	// than the job takes; the test does not assert any timing).
	st, got := e.do("GET", "/v1/jobs/"+id+"?wait=30s", k1, nil)
	if st != 200 || got["status"] != "succeeded" || got["response"] == nil {
		t.Fatalf("long poll: %d %v", st, got)
	}
	if st, body := e.do("GET", "/v1/jobs/"+id+"?wait=1s", k2, nil); st != 404 {
		t.Errorf("another account's job: %d %v", st, body)
	}
	if bodies := up.Bodies(); len(bodies) != 1 || strings.Contains(bodies[0], "callback_url") || !strings.Contains(bodies[0], "secret prompt") {
		t.Errorf("upstream got %q, want one request without callback_url", bodies)
	}

	// The callback: signed, the job as GET shows it.
	var d delivery
	select {
	case d = <-deliveries:
	case <-time.After(30 * time.Second):
		t.Fatal("no callback within 30s")
	}
	if err := callbacks.Verify([]byte(cbSecret), d.sig, d.body, time.Now(), 0); err != nil {
		t.Errorf("callback signature: %v (%s)", err, d.sig)
	}
	var sent map[string]any
	if err := json.Unmarshal(d.body, &sent); err != nil || sent["id"] != id || sent["status"] != "succeeded" || sent["response"] == nil || d.job != id {
		t.Errorf("callback body %s, job header %q", d.body, d.job)
	}
	eventually(t, "callback recorded", func() error {
		_, j := e.do("GET", "/v1/jobs/"+id, k1, nil)
		if cb, _ := j["callback"].(map[string]any); cb["status"] != "delivered" {
			return fmt.Errorf("callback = %v", j["callback"])
		}
		return nil
	})

	// The timeline, without and with the bodies.
	st, tl := e.do("GET", "/v1/jobs/"+id+"/events", k1, nil)
	if st != 200 {
		t.Fatalf("timeline: %d %v", st, tl)
	}
	var typs []string
	for i, x := range tl["data"].([]any) {
		ev := x.(map[string]any)
		if typ := ev["type"].(string); strings.HasPrefix(typ, "completion.") {
			typs = append(typs, typ) // other areas' events (quota.*) share the stream
		}
		data := ev["data"].(map[string]any)
		if ev["stream_version"].(float64) != float64(i+1) {
			t.Errorf("event %d has version %v", i, ev["stream_version"])
		}
		if _, ok := data["request"]; ok {
			t.Errorf("timeline shows the request: %v", data)
		}
		if _, ok := data["response"]; ok {
			t.Errorf("timeline shows the response: %v", data)
		}
	}
	want := []string{events.TypeCompletionRequested, events.TypeCompletionStarted, events.TypeCompletionSucceeded, events.TypeCompletionCallbackDelivered}
	if strings.Join(typs, ",") != strings.Join(want, ",") {
		t.Errorf("timeline = %v, want %v", typs, want)
	}
	_, full := e.do("GET", "/v1/jobs/"+id+"/events?include=bodies", k1, nil)
	first := full["data"].([]any)[0].(map[string]any)["data"].(map[string]any)
	if req, _ := first["request"].(map[string]any); req["callback_url"] != cbURL {
		t.Errorf("timeline with bodies: request = %v", first["request"])
	}
	if st, _ := e.do("GET", "/v1/jobs/"+id+"/events", k2, nil); st != 404 {
		t.Errorf("another account's timeline: %d", st)
	}
	if st, _ := e.do("GET", "/v1/jobs/"+id+"/events?include=prompt", k1, nil); st != 400 {
		t.Errorf("include=prompt: %d", st)
	}
}
