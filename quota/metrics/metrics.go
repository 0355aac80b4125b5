// Package metrics wraps a quota.Limiter with Prometheus metrics.
package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/quota"
)

// Instrumented counts what a quota.Limiter decides and how long it takes.
type Instrumented struct {
	next        quota.Limiter
	decisions   *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	outstanding prometheus.Gauge
}

// Instrument wraps l with metrics registered on reg (nil: not registered):
// admissions and rejections by reason, limiter latency by operation,
// and reservations outstanding on this replica.
func Instrument(l quota.Limiter, reg prometheus.Registerer) (*Instrumented, error) {
	m := &Instrumented{
		next: l,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_quota_decisions_total",
			Help: "Admission decisions by outcome (admitted, rejected) and reason (the limit hit; empty when admitted).",
		}, []string{"outcome", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_quota_limiter_seconds",
			Help:    "Limiter latency by operation (admit, settle, peek).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}, []string{"op"}),
		outstanding: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_quota_reservations_outstanding",
			Help: "Budget reservations admitted by this replica and not yet settled or released.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.decisions, m.latency, m.outstanding} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("quota: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Admit implements quota.Limiter.
func (m *Instrumented) Admit(ctx context.Context, a quota.Admission) (quota.Decision, error) {
	start := time.Now()
	d, err := m.next.Admit(ctx, a)
	m.latency.WithLabelValues("admit").Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		m.decisions.WithLabelValues("error", "").Inc()
	case d.Allowed:
		m.decisions.WithLabelValues("admitted", "").Inc()
		m.outstanding.Inc()
	default:
		m.decisions.WithLabelValues("rejected", string(d.Reason)).Inc()
	}
	return d, err
}

// Check implements quota.Limiter; a refusal counts as a rejection (outcome
// "refused_early"): the request is answered 429 before its body is read.
func (m *Instrumented) Check(ctx context.Context, a quota.Admission) (quota.Decision, error) {
	start := time.Now()
	d, err := m.next.Check(ctx, a)
	m.latency.WithLabelValues("check").Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		m.decisions.WithLabelValues("error", "").Inc()
	case !d.Allowed:
		m.decisions.WithLabelValues("refused_early", string(d.Reason)).Inc()
	}
	return d, err
}

// Settle implements quota.Limiter.
func (m *Instrumented) Settle(ctx context.Context, s quota.Settlement) (quota.SettleResult, error) {
	start := time.Now()
	r, err := m.next.Settle(ctx, s)
	m.latency.WithLabelValues("settle").Observe(time.Since(start).Seconds())
	if err == nil && !r.Duplicate {
		m.outstanding.Dec()
	}
	return r, err
}

// Peek implements quota.Limiter.
func (m *Instrumented) Peek(ctx context.Context, accountID, keyID string, now time.Time) (quota.Usage, error) {
	start := time.Now()
	u, err := m.next.Peek(ctx, accountID, keyID, now)
	m.latency.WithLabelValues("peek").Observe(time.Since(start).Seconds())
	return u, err
}

// Extend implements quota.Limiter.
func (m *Instrumented) Extend(ctx context.Context, e quota.Extension) (bool, error) {
	start := time.Now()
	held, err := m.next.Extend(ctx, e)
	m.latency.WithLabelValues("extend").Observe(time.Since(start).Seconds())
	return held, err
}
