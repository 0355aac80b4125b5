package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate/tollgate/config"
)

// fakeClock is the Router's clock and sleep: a sleep advances the clock
// and is recorded, so backoffs are asserted without waiting.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept = append(c.slept, d)
	return nil
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slept...)
}

// policy is a router over test upstreams with a fake clock and registry.
type policy struct {
	r     *Router
	clock *fakeClock
	reg   *prometheus.Registry
	model config.Model
}

func newPolicy(t *testing.T, routing config.Routing, timeout time.Duration, ups ...*upstream) *policy {
	t.Helper()
	cfg := &config.Config{Routing: routing}
	model := config.Model{Name: "smart", MaxOutputTokens: 1000}
	for i, u := range ups {
		name := []string{"primary", "secondary", "tertiary"}[i]
		cfg.Providers = append(cfg.Providers, config.Provider{Name: name, Kind: config.KindOpenAI, BaseURL: u.srv.URL + "/v1", Timeout: config.Duration(timeout)})
		model.Deployments = append(model.Deployments, config.Deployment{Provider: name, Model: name + "-model"})
	}
	cfg.Models = []config.Model{model}
	p := &policy{clock: newFakeClock(), reg: prometheus.NewRegistry(), model: model}
	var err error
	p.r, err = NewRouter(cfg, nil, nil, nil, WithClock(p.clock.now), WithSleep(p.clock.sleep),
		WithRand(func() float64 { return 0.5 }), WithRegisterer(p.reg))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *policy) complete(t *testing.T) (*Response, error) {
	t.Helper()
	return p.r.Complete(context.Background(), p.model, json.RawMessage(`{"model":"smart","messages":[{"role":"user","content":"hi"}]}`))
}

// switchable answers with a 503 while down is set.
type switchable struct{ down atomic.Bool }

func (s *switchable) handle(w http.ResponseWriter, r *http.Request) {
	if s.down.Load() {
		openAIError(w, 503, "primary is down for maintenance", "server_error", "")
		return
	}
	ok(w, r)
}

func TestRetryAfterSecondsIsHonoured(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "7")
			openAIError(w, 429, "Rate limit reached", "requests", "rate_limit_exceeded")
			return
		}
		ok(w, r)
	})
	p := newPolicy(t, config.Routing{}, time.Minute, u)
	resp, err := p.complete(t)
	if err != nil {
		t.Fatal(err)
	}
	// The jittered backoff (0.5 × 250ms) is shorter than the provider asked for.
	if got := p.clock.sleeps(); len(got) != 1 || got[0] != 7*time.Second {
		t.Errorf("slept %v, want [7s]", got)
	}
	if u.calls() != 2 || len(resp.Attempts) != 1 {
		t.Fatalf("calls %d, attempts %+v", u.calls(), resp.Attempts)
	}
	a := resp.Attempts[0]
	if a.Class != ClassRateLimited || a.RetryAfter != 7*time.Second || a.Deployment() != "primary/primary-model" || a.UpstreamStatus != 429 || !a.Retryable {
		t.Errorf("attempt = %+v", a)
	}
}

func TestRetryAfterHTTPDateAndBeyondDeadline(t *testing.T) {
	t.Parallel()
	var p *policy
	var n atomic.Int32
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", p.clock.now().Add(20*time.Second).Format(http.TimeFormat))
			openAIError(w, 503, "busy", "server_error", "")
			return
		}
		ok(w, r)
	})
	p = newPolicy(t, config.Routing{}, time.Minute, u)
	if _, err := p.complete(t); err != nil {
		t.Fatal(err)
	}
	if got := p.clock.sleeps(); len(got) != 1 || got[0] != 20*time.Second {
		t.Errorf("slept %v, want [20s]", got)
	}

	// A Retry-After past the routing deadline ends the request at once.
	always := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		openAIError(w, 429, "later", "requests", "")
	})
	p = newPolicy(t, config.Routing{Deadline: config.Duration(time.Minute)}, time.Minute, always)
	_, err := p.complete(t)
	var le *Error
	if !errors.As(err, &le) || le.Status != 429 || always.calls() != 1 || len(p.clock.sleeps()) != 0 {
		t.Fatalf("error %v, calls %d, slept %v", err, always.calls(), p.clock.sleeps())
	}
}

func TestExponentialBackoffWithJitter(t *testing.T) {
	t.Parallel()
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { openAIError(w, 500, "boom", "server_error", "") })
	p := newPolicy(t, config.Routing{MaxAttempts: 4, BaseBackoff: config.Duration(time.Second), MaxBackoff: config.Duration(3 * time.Second),
		Cooldown: config.Cooldown{Failures: 100}}, time.Minute, u)
	_, err := p.complete(t)
	var le *Error
	if !errors.As(err, &le) || le.UpstreamStatus != 500 || u.calls() != 4 {
		t.Fatalf("error %v, calls %d", err, u.calls())
	}
	// Rounds 1, 2, 3: ceilings 1s, 2s, 3s (capped), times the jitter 0.5.
	want := []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond}
	if got := p.clock.sleeps(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("slept %v, want %v", got, want)
	}
	if got := AttemptsOf(err); len(got) != 4 || got[3] != le {
		t.Errorf("attempts = %v", got)
	}
}

func TestCooldownOpensProbesAndCloses(t *testing.T) {
	t.Parallel()
	var primary switchable
	primary.down.Store(true)
	pu, su := newUpstream(t, primary.handle), newUpstream(t, ok)
	p := newPolicy(t, config.Routing{Cooldown: config.Cooldown{Failures: 2, Duration: config.Duration(30 * time.Second)}}, time.Minute, pu, su)
	state := func() float64 { return metricValue(t, p.r.metrics.state.WithLabelValues("primary", "primary-model")) }

	for i := range 2 { // two failures open the circuit
		resp, err := p.complete(t)
		if err != nil || resp.Provider != "secondary" || len(resp.Attempts) != 1 || resp.Attempts[0].Class != ClassServerError {
			t.Fatalf("request %d: %+v, %v", i, resp, err)
		}
	}
	if pu.calls() != 2 || state() != circuitOpen {
		t.Fatalf("primary calls %d, state %v", pu.calls(), state())
	}
	// Open: the primary is skipped, and the skip is an attempt record.
	resp, err := p.complete(t)
	if err != nil || resp.Provider != "secondary" || pu.calls() != 2 {
		t.Fatalf("%+v, %v, primary calls %d", resp, err, pu.calls())
	}
	if len(resp.Attempts) != 1 || resp.Attempts[0].Class != ClassCoolingDown ||
		!strings.Contains(resp.Attempts[0].Message, "primary is down for maintenance") {
		t.Errorf("attempts = %+v", resp.Attempts)
	}
	// After the cooldown, one probe; the primary is back, so it closes and serves.
	p.clock.advance(31 * time.Second)
	primary.down.Store(false)
	resp, err = p.complete(t)
	if err != nil || resp.Provider != "primary" || len(resp.Attempts) != 0 || state() != circuitClosed {
		t.Fatalf("probe: %+v, %v, state %v", resp, err, state())
	}
	// Down again: two failures open it; a failed probe opens it again at once.
	primary.down.Store(true)
	for range 2 {
		if _, err := p.complete(t); err != nil {
			t.Fatal(err)
		}
	}
	p.clock.advance(31 * time.Second)
	before := pu.calls()
	if resp, err = p.complete(t); err != nil || resp.Provider != "secondary" || pu.calls() != before+1 {
		t.Fatalf("failed probe: %+v, %v", resp, err)
	}
	if state() != circuitOpen {
		t.Errorf("state after failed probe = %v", state())
	}
	if _, err = p.complete(t); err != nil || pu.calls() != before+1 {
		t.Fatalf("primary called while open again: %v, calls %d", err, pu.calls())
	}
	if got := metricValue(t, p.r.metrics.fallbacks.WithLabelValues("smart", "primary", "primary-model")); got != 5 {
		t.Errorf("fallbacks from primary = %v, want 5", got)
	}
	if got := metricValue(t, p.r.metrics.attempts.WithLabelValues("smart", "primary", "primary-model", ClassCoolingDown)); got != 2 {
		t.Errorf("cooling_down attempts = %v", got)
	}
}

func TestHalfOpenLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	var primary switchable
	primary.down.Store(true)
	probeArrived, release := make(chan struct{}), make(chan struct{})
	var probing atomic.Bool
	pu := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if probing.Load() {
			close(probeArrived)
			<-release
		}
		primary.handle(w, r)
	})
	su := newUpstream(t, ok)
	p := newPolicy(t, config.Routing{Cooldown: config.Cooldown{Failures: 1, Duration: config.Duration(10 * time.Second)}}, time.Minute, pu, su)
	if _, err := p.complete(t); err != nil {
		t.Fatal(err)
	}
	p.clock.advance(11 * time.Second)
	primary.down.Store(false)
	probing.Store(true)
	done := make(chan *Response, 1)
	go func() {
		resp, err := p.complete(t)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	<-probeArrived
	probing.Store(false)
	// While the probe is out, other requests do not pile onto the primary.
	resp, err := p.complete(t)
	if err != nil || resp.Provider != "secondary" || resp.Attempts[0].Class != ClassCoolingDown {
		t.Fatalf("during probe: %+v, %v", resp, err)
	}
	close(release)
	if probe := <-done; probe == nil || probe.Provider != "primary" {
		t.Fatalf("probe = %+v", probe)
	}
	if pu.calls() != 2 {
		t.Errorf("primary calls = %d, want 2", pu.calls())
	}
}

func TestAllCoolingDownNamesLastUpstreamError(t *testing.T) {
	t.Parallel()
	pu := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 503, "primary overloaded", "server_error", "")
	})
	su := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 500, "secondary melted", "server_error", "")
	})
	p := newPolicy(t, config.Routing{MaxAttempts: 2, Cooldown: config.Cooldown{Failures: 1}}, time.Minute, pu, su)
	if _, err := p.complete(t); err == nil {
		t.Fatal("expected failure")
	}
	_, err := p.complete(t)
	var le *Error
	if !errors.As(err, &le) || le.Class != ClassCoolingDown || le.Status != 502 || le.UpstreamStatus != 500 ||
		!strings.Contains(le.Message, "cooling down") || !strings.Contains(le.Message, "secondary melted") {
		t.Fatalf("error = %#v", err)
	}
	if pu.calls() != 1 || su.calls() != 1 {
		t.Errorf("calls %d %d", pu.calls(), su.calls())
	}
	if got := AttemptsOf(err); len(got) != 2 || got[0].Class != ClassCoolingDown || got[1].Class != ClassCoolingDown {
		t.Errorf("attempts = %+v", got)
	}
	if got := metricValue(t, p.r.metrics.requests.WithLabelValues("smart", "primary", "primary-model", "cooling_down")); got != 1 {
		t.Errorf("cooling_down requests = %v", got)
	}
}

func TestClientErrorNeitherFallsBackNorOpensCircuit(t *testing.T) {
	t.Parallel()
	pu := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 400, "This model's maximum context length is 128000 tokens.", "invalid_request_error", "context_length_exceeded")
	})
	su := newUpstream(t, ok)
	p := newPolicy(t, config.Routing{Cooldown: config.Cooldown{Failures: 1}}, time.Minute, pu, su)
	for range 3 {
		_, err := p.complete(t)
		var le *Error
		if !errors.As(err, &le) || le.Status != 400 || le.Code != "context_length_exceeded" || le.Class != ClassClientError ||
			le.Message != "This model's maximum context length is 128000 tokens." {
			t.Fatalf("error = %v", err)
		}
		if got := AttemptsOf(err); len(got) != 1 || got[0] != le {
			t.Fatalf("attempts = %+v", got)
		}
	}
	if pu.calls() != 3 || su.calls() != 0 || len(p.clock.sleeps()) != 0 {
		t.Errorf("calls %d %d, slept %v", pu.calls(), su.calls(), p.clock.sleeps())
	}
}

func TestTimeoutsAndConnectionErrorsFallBack(t *testing.T) {
	t.Parallel()
	hang := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	dead := newUpstream(t, ok)
	dead.srv.Close() // connection refused
	su := newUpstream(t, ok)
	p := newPolicy(t, config.Routing{}, 50*time.Millisecond, hang, dead, su)
	resp, err := p.complete(t)
	if err != nil || resp.Provider != "tertiary" {
		t.Fatalf("%+v, %v", resp, err)
	}
	if len(resp.Attempts) != 2 || resp.Attempts[0].Class != ClassTimeout || resp.Attempts[0].Status != 504 ||
		resp.Attempts[1].Class != ClassConnection || resp.Attempts[1].Deployment() != "secondary/secondary-model" {
		t.Errorf("attempts = %+v", resp.Attempts)
	}
}

func TestDeadlineEndsTheRequest(t *testing.T) {
	t.Parallel()
	hang := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	su := newUpstream(t, ok)
	p := newPolicy(t, config.Routing{Deadline: config.Duration(50 * time.Millisecond)}, time.Hour, hang, su)
	_, err := p.complete(t)
	var le *Error
	if !errors.As(err, &le) || le.Status != 504 || le.Code != "deadline_exceeded" || le.Class != ClassTimeout {
		t.Fatalf("error = %v", err)
	}
	if su.calls() != 0 {
		t.Error("fell back after the deadline")
	}
	// The deadline is Tollgate's, not the deployment's fault.
	if p.r.breaker(p.model.Deployments[0]).peek(p.clock.now()); metricValue(t, p.r.metrics.state.WithLabelValues("primary", "primary-model")) != circuitClosed {
		t.Error("deadline opened the circuit")
	}
}

func TestWeightedSpreadAndPriorities(t *testing.T) {
	t.Parallel()
	a, b, c := newUpstream(t, ok), newUpstream(t, ok), newUpstream(t, ok)
	one, two := 1, 2
	cfg := &config.Config{
		Providers: []config.Provider{
			{Name: "a", Kind: config.KindOpenAI, BaseURL: a.srv.URL + "/v1"},
			{Name: "b", Kind: config.KindOpenAI, BaseURL: b.srv.URL + "/v1"},
			{Name: "c", Kind: config.KindOpenAI, BaseURL: c.srv.URL + "/v1"},
		},
	}
	model := config.Model{Name: "m", Deployments: []config.Deployment{
		{Provider: "c", Model: "c", Priority: &two},
		{Provider: "a", Model: "a", Weight: 3, Priority: &one},
		{Provider: "b", Model: "b", Weight: 1, Priority: &one},
	}}
	// An evenly spread random source: request i draws (i mod 100)/100.
	var n atomic.Int64
	rnd := func() float64 { k := n.Add(1) - 1; return float64(k%100)/100 + 0.005 }
	r, err := NewRouter(cfg, nil, nil, nil, WithRand(rnd))
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := r.Complete(context.Background(), model, json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`)); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls() != 75 || b.calls() != 25 || c.calls() != 0 {
		t.Errorf("calls a=%d b=%d c=%d, want 75/25/0", a.calls(), b.calls(), c.calls())
	}
	// Without priorities, list order: plain ordered fallback.
	order, err := r.order(config.Model{Deployments: []config.Deployment{{Provider: "c", Model: "1"}, {Provider: "a", Model: "2", Weight: 9}, {Provider: "b", Model: "3"}}})
	if err != nil || len(order) != 3 || order[0].dep.Model != "1" || order[1].dep.Model != "2" || order[2].dep.Model != "3" {
		t.Errorf("order = %+v, %v", order, err)
	}
}

func TestRouterFillsMaxTokensForAnthropic(t *testing.T) {
	t.Parallel()
	a := newAnthropicServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, anthropicToolMessage) })
	cfg := &config.Config{Providers: []config.Provider{{Name: "claude", Kind: config.KindAnthropic, BaseURL: a.srv.URL, APIKeyEnv: "ANTHROPIC_API_KEY"}}}
	r, err := NewRouter(cfg, nil, func(string) string { return anthropicKey }, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := config.Model{Name: "claude", MaxOutputTokens: 1000, Deployments: []config.Deployment{{Provider: "claude", Model: "claude-sonnet-4-5"}}}
	for body, want := range map[string]string{
		`{"messages":[{"role":"user","content":"x"}]}`:                 "1000",
		`{"max_tokens":50,"messages":[{"role":"user","content":"x"}]}`: "50",
	} {
		if _, err := r.Complete(context.Background(), model, json.RawMessage(body)); err != nil {
			t.Fatal(err)
		}
		if got := string(a.last()["max_tokens"]); got != want {
			t.Errorf("%s: max_tokens = %s, want %s", body, got, want)
		}
	}
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge: %v", m.Desc())
	return 0
}
