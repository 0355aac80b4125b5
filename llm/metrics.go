package llm

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Router's Prometheus collectors. Labels: model is the
// client-facing model, provider and upstream_model the deployment.
type metrics struct {
	requests  *prometheus.CounterVec
	attempts  *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	state     *prometheus.GaugeVec
	latency   *prometheus.HistogramVec
	ttft      *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	dep := []string{"model", "provider", "upstream_model"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_llm_requests_total",
			Help: "Routed completions by final outcome (success, client_error, error, deadline, cooling_down, canceled) and the deployment that answered or failed last.",
		}, append(dep, "outcome")),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_llm_attempts_total",
			Help: "Provider attempts by result: success or the failure class (rate_limited, server_error, timeout, connection, provider_auth, client_error, cooling_down).",
		}, append(dep, "result")),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_llm_fallbacks_total",
			Help: "Times the router moved on from a failed deployment (the labels name the one it left).",
		}, dep),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tollgate_llm_deployment_cooldown_state",
			Help: "Circuit state per deployment: 0 closed, 1 open (cooling down), 2 half-open (probing).",
		}, []string{"provider", "upstream_model"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_llm_attempt_duration_seconds",
			Help:    "Duration of each provider attempt (for streams, until the first chunk), successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.025, 2, 14),
		}, dep),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_llm_time_to_first_token_seconds",
			Help:    "Streams: delay from the request to the first content chunk, failed attempts included.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, dep),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.attempts, err = register(reg, m.attempts); err != nil {
		return nil, err
	}
	if m.fallbacks, err = register(reg, m.fallbacks); err != nil {
		return nil, err
	}
	if m.state, err = register(reg, m.state); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.ttft, err = register(reg, m.ttft); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name: a second Router on the same registry (tests, several roles in
// one process) shares the first one's collectors.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("llm: register metrics: %w", err)
	}
	return c, nil
}
