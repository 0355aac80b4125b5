package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/commands"
)

// DueRecords returns up to limit records due for reporting at now: open
// records whose window ended long enough ago, and every closed record not
// yet reported. The wiring adapts records.Due to it.
type DueRecords func(ctx context.Context, now time.Time, limit int) ([]billing.Record, error)

// Defaults of ReporterConfig.
const (
	DefaultEventName   = "tollgate_tokens"
	DefaultInterval    = 30 * time.Second
	DefaultBatchSize   = 500
	DefaultMaxBackoff  = 10 * time.Minute
	DefaultMaxEventAge = 35*24*time.Hour - time.Hour
	// DefaultRateLimit is the most Stripe calls per second the reporter
	// makes: under Stripe's live-mode limit of 100 per second, leaving room
	// for checkout and portal calls on the same account.
	DefaultRateLimit = 80
	// DefaultMaxRetries is how often a meter event refused with 429 or 5xx
	// is retried within a pass.
	DefaultMaxRetries = 3
	// DefaultRetryBase is the first retry's wait when Stripe gives no
	// Retry-After; it doubles with each retry.
	DefaultRetryBase = time.Second
	// DefaultMaxRetryWait is the longest wait within a pass; a longer
	// Retry-After stops the pass and Run waits it out.
	DefaultMaxRetryWait = 30 * time.Second
)

// actor is the envelope actor of the reporter's events.
const actor = "system:billing-reporter"

// ReporterConfig configures a Reporter. Store, Due and Stripe are required;
// zero values of the other fields take the defaults.
type ReporterConfig struct {
	// Store loads and appends streams.
	Store commands.EventStore
	// Due lists the records to report.
	Due DueRecords
	// Stripe is the Stripe client (see NewStripeClient).
	Stripe *client.API
	// EventName is the meter event name (STRIPE_METER_EVENT_NAME);
	// DefaultEventName when empty.
	EventName string
	// Interval is the pause between passes of Run; DefaultInterval when zero.
	Interval time.Duration
	// BatchSize is how many due records one pass handles; DefaultBatchSize
	// when zero.
	BatchSize int
	// MaxBackoff caps the pause Run makes after a pass that Stripe pushed
	// back on (429, 5xx, unreachable); DefaultMaxBackoff when zero.
	MaxBackoff time.Duration
	// MaxEventAge is the age of a window start beyond which Stripe refuses
	// a meter event (35 days); such records are flagged, not sent.
	// DefaultMaxEventAge (35 days less an hour of margin) when zero.
	MaxEventAge time.Duration
	// RateLimit is the most Stripe calls per second, evenly spaced;
	// DefaultRateLimit when zero.
	RateLimit float64
	// MaxRetries is how often a call refused with 429 or 5xx is retried
	// within a pass (unless Stripe-Should-Retry is false);
	// DefaultMaxRetries when zero.
	MaxRetries int
	// RetryBase is the first retry's wait without Retry-After, doubled
	// each retry; DefaultRetryBase when zero.
	RetryBase time.Duration
	// MaxRetryWait caps the waits within a pass; DefaultMaxRetryWait when zero.
	MaxRetryWait time.Duration
	// Sleep waits d or until ctx ends (rate limit, retries); a timer when
	// nil. Tests record the waits instead.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger logs; nothing is logged when nil.
	Logger *slog.Logger
	// Registerer receives the reporter's metrics; none are registered when nil.
	Registerer prometheus.Registerer
	// AfterStripeAccepted, when set, is called after Stripe accepted a
	// meter event and before billing.usage_reported is appended; tests
	// inject a crash here. An error ends the record's handling as if the
	// process had died there.
	AfterStripeAccepted func(recordID string) error
}

// withDefaults returns the config with defaults for its zero fields.
func (c ReporterConfig) withDefaults() ReporterConfig {
	if c.EventName == "" {
		c.EventName = DefaultEventName
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxEventAge == 0 {
		c.MaxEventAge = DefaultMaxEventAge
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.RetryBase == 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.MaxRetryWait == 0 {
		c.MaxRetryWait = DefaultMaxRetryWait
	}
	if c.Sleep == nil {
		c.Sleep = sleepCtx
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports what is missing or out of range, defaults applied.
func (c ReporterConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store is required"))
	}
	if c.Due == nil {
		errs = append(errs, errors.New("due records source is required"))
	}
	if c.Stripe == nil || c.Stripe.BillingMeterEvents == nil {
		errs = append(errs, errors.New("stripe client is required (see NewStripeClient)"))
	}
	if len(c.EventName) > billing.MaxIdentifierLen {
		errs = append(errs, fmt.Errorf("event name is longer than %d characters", billing.MaxIdentifierLen))
	}
	if c.Interval < 0 {
		errs = append(errs, errors.New("interval must be positive"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("batch size must be positive"))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, errors.New("max backoff must be positive"))
	}
	if c.MaxEventAge < 0 || c.MaxEventAge > 35*24*time.Hour {
		errs = append(errs, errors.New("max event age must be positive and at most 35 days (Stripe's limit)"))
	}
	if c.RateLimit < 0 || c.RateLimit > 1000 {
		errs = append(errs, errors.New("rate limit must be positive and at most 1000 calls per second"))
	}
	if c.MaxRetries < 0 || c.RetryBase < 0 || c.MaxRetryWait < 0 {
		errs = append(errs, errors.New("max retries, retry base and max retry wait must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("billing reporter config: %w", err)
	}
	return nil
}
