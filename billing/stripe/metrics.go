package stripe

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the reporter's Prometheus metrics.
type metrics struct {
	reported      prometheus.Counter
	quantity      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	duplicates    prometheus.Counter
	tooOld        prometheus.Gauge
	flagged       prometheus.Counter
	retries       *prometheus.CounterVec
	stripeSeconds prometheus.Histogram
}

// newMetrics builds the metrics and registers them on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_billing_records_reported_total",
			Help: "Billing records whose meter event Stripe accepted and whose billing.usage_reported was recorded.",
		}),
		quantity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_billing_quantity_reported_total",
			Help: "Quantity reported to Stripe, by unit.",
		}, []string{"unit"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_billing_report_errors_total",
			Help: "Errors reporting billing records, by kind (store, account, invalid_record, stripe_rejected, stripe_rate_limited, stripe_server, stripe_network, after_stripe_accepted).",
		}, []string{"kind"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_billing_records_skipped_total",
			Help: "Due billing records left unreported in a pass, by reason (no_customer, too_old, window_in_future).",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_billing_stripe_duplicate_identifiers_total",
			Help: "Meter events Stripe refused as already received (a retry after a crash), counted as accepted.",
		}),
		tooOld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_billing_records_too_old",
			Help: "Due billing records seen in the last pass that are too old for Stripe meter events (flagged, or flagged now).",
		}),
		flagged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_billing_records_flagged_total",
			Help: "Billing records flagged (billing.record_flagged) because they are too old for Stripe meter events; each needs an operator.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_billing_stripe_retries_total",
			Help: "Meter event calls retried after Stripe pushed back, by kind (stripe_rate_limited, stripe_server).",
		}, []string{"kind"}),
		stripeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_billing_stripe_request_seconds",
			Help:    "Time to create one Stripe meter event, stripe-go's retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.reported, m.quantity, m.errors, m.skipped, m.duplicates, m.tooOld, m.flagged, m.retries, m.stripeSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("billing: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
