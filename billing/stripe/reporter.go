// Package stripe connects Tollgate to Stripe. Its Reporter sends billable
// usage (billing records) to Stripe as meter events, exactly once per
// record.
//
// A record's authority is its own event stream, "billingrecord-<id>": the
// reporter first freezes the record's quantity with billing.record_closed,
// then sends one meter event whose identifier is the record id, then
// records billing.usage_reported. A crash anywhere leads the next pass to
// resume from the stream, re-sending the same identifier with the same
// closed quantity and customer, which Stripe deduplicates. A record too old
// for Stripe is frozen with billing.record_flagged instead and left to an
// operator.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
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

// maxFutureSkew is how far in the future Stripe accepts a meter event's
// timestamp.
const maxFutureSkew = 5 * time.Minute

// maxIdentifierLen is Stripe's limit on a meter event's identifier and
// event name.
const maxIdentifierLen = 100

// actor is the envelope actor of the reporter's events.
const actor = "system:billing-reporter"

// recordIDPattern is the form of a billing record id (see the event schemas).
var recordIDPattern = regexp.MustCompile(`^br_[A-Za-z0-9]+$`)

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
	if len(c.EventName) > maxIdentifierLen {
		errs = append(errs, fmt.Errorf("event name is longer than %d characters", maxIdentifierLen))
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

// Reporter sends due billing records to Stripe as meter events. Its calls
// go through a rate limiter (RateLimit per second) and a lock per customer
// and meter, so at most one call per customer and meter is in flight
// whatever calls RunOnce concurrently (Stripe allows one). Several
// reporters may run at once: the record streams' expected versions let
// only one close a record, and Stripe's identifier uniqueness absorbs a
// duplicate send.
type Reporter struct {
	cfg     ReporterConfig
	log     *slog.Logger
	metrics *metrics
	pace    *pacer
	inCall  keyedLocks
}

// NewReporter returns a Reporter for cfg.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Reporter{cfg: cfg, log: cfg.Logger.With("component", "billing-reporter"), metrics: m, pace: newPacer(cfg.RateLimit)}, nil
}

// Run reports due records every Interval until ctx ends, then returns nil.
// After a pass that Stripe pushed back on (rate limit, server error,
// unreachable) it waits twice as long each time, up to MaxBackoff.
func (r *Reporter) Run(ctx context.Context) error {
	wait := time.Duration(0)
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		n, err := r.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait = r.cfg.Interval
		switch {
		case errors.Is(err, errBackpressure):
			failures++
			// Stripe's Retry-After, when longer, wins over our backoff.
			wait = max(backoff(r.cfg.Interval, r.cfg.MaxBackoff, failures), longestRetryAfter(err))
			r.log.Warn("stripe pushed back; backing off", "reported", n, "wait", wait, "err", err)
		case err != nil:
			failures = 0
			r.log.Error("billing report pass failed", "reported", n, "err", err)
		default:
			failures = 0
			if n > 0 {
				r.log.Info("billing records reported", "reported", n)
			}
		}
	}
}

// backoff returns interval·2^failures, at most maxWait.
func backoff(interval, maxWait time.Duration, failures int) time.Duration {
	d := interval
	for i := 0; i < failures && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// errBackpressure marks a pass stopped because Stripe pushed back.
var errBackpressure = errors.New("stripe pushed back; pass stopped")

// RunOnce handles one batch of due records and returns how many it
// reported to Stripe. An error with one record does not stop the pass; the
// errors are joined into the returned one. A rate limit, server error or
// network failure from Stripe stops the pass: the remaining records wait
// for the next one, which Run delays (backoff).
func (r *Reporter) RunOnce(ctx context.Context) (reported int, err error) {
	now := r.cfg.Now()
	recs, err := r.cfg.Due(ctx, now, r.cfg.BatchSize)
	if err != nil {
		r.metrics.errors.WithLabelValues(errKindStore).Inc()
		return 0, fmt.Errorf("billing: due records: %w", err)
	}
	var errs []error
	tooOld := 0
	for _, rec := range recs {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		out, err := r.report(ctx, rec, now)
		if err != nil && ctx.Err() != nil {
			errs = append(errs, err)
			break
		}
		if out == outcomeTooOld {
			tooOld++
		}
		if out == outcomeReported {
			reported++
		}
		if err == nil {
			continue
		}
		var re *recordError
		kind := errKindStore
		if errors.As(err, &re) {
			kind = re.kind
		}
		r.metrics.errors.WithLabelValues(kind).Inc()
		r.log.Error("billing record not reported", "record_id", rec.RecordID, "account_id", rec.AccountID, "kind", kind, "err", err)
		if isBackpressure(kind) {
			errs = append(errs, fmt.Errorf("%w: %w", errBackpressure, err))
			break
		}
		errs = append(errs, err)
	}
	r.metrics.tooOld.Set(float64(tooOld))
	if err := errors.Join(errs...); err != nil {
		return reported, fmt.Errorf("billing: report: %w", err)
	}
	return reported, nil
}

// outcome is what handling one record came to.
type outcome int

const (
	outcomeNone outcome = iota
	outcomeReported
	outcomeAlreadyReported
	outcomeNoCustomer
	outcomeTooOld
	outcomeTooNew
)

// recordError is an error handling one record, with its metric kind.
type recordError struct {
	kind     string
	recordID string
	err      error
}

func (e *recordError) Error() string { return "record " + e.recordID + ": " + e.err.Error() }
func (e *recordError) Unwrap() error { return e.err }

// recordState is a billing record stream folded.
type recordState struct {
	version  int64
	closed   *events.BillingRecordClosed
	closedID string
	reported bool
	flagged  bool
}

func foldRecord(evs []events.Envelope) (recordState, error) {
	var s recordState
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return s, err
		}
		switch d := d.(type) {
		case events.BillingRecordClosed:
			s.closed = &d
			s.closedID = e.EventID.String()
		case events.BillingUsageReported:
			s.reported = true
		case events.BillingRecordFlagged:
			s.flagged = true
		default:
			return s, fmt.Errorf("unexpected event %s (%s) in %s", e.EventID, e.Type, e.StreamID)
		}
		s.version = e.StreamVersion
	}
	return s, nil
}

// maxAttempts bounds how often one record's stream is reloaded after a
// concurrent append.
const maxAttempts = 3

// report moves one record as far as it can: close it, send it, record that
// Stripe accepted it.
func (r *Reporter) report(ctx context.Context, rec billing.Record, now time.Time) (outcome, error) {
	fail := func(kind string, err error) (outcome, error) {
		return outcomeNone, &recordError{kind: kind, recordID: rec.RecordID, err: err}
	}
	if !recordIDPattern.MatchString(rec.RecordID) || len(rec.RecordID) > maxIdentifierLen {
		return fail(errKindInvalidRecord, fmt.Errorf("record id %q is not of the form br_<alphanumeric>, at most %d characters", rec.RecordID, maxIdentifierLen))
	}
	stream := events.StreamBillingRecord + rec.RecordID
	for attempt := 0; attempt < maxAttempts; attempt++ {
		evs, err := r.cfg.Store.Load(ctx, stream)
		if err != nil {
			return fail(errKindStore, err)
		}
		st, err := foldRecord(evs)
		if err != nil {
			return fail(errKindStore, err)
		}
		switch {
		case st.reported:
			return outcomeAlreadyReported, nil
		case st.flagged:
			// Flagged earlier; the read model has not caught up yet.
			return outcomeTooOld, nil
		case st.closed == nil:
			out, err := r.close(ctx, rec, stream, now)
			if errors.Is(err, events.ErrConflict) {
				continue // another reporter closed it: reload.
			}
			if err != nil || out != outcomeNone {
				return out, err
			}
			continue // closed: reload and send what is stored.
		default:
			out, err := r.send(ctx, rec.RecordID, stream, st, now)
			if errors.Is(err, events.ErrConflict) {
				continue
			}
			return out, err
		}
	}
	return fail(errKindStore, fmt.Errorf("stream %s kept changing under %d attempts", stream, maxAttempts))
}

// customer returns the account's Stripe customer, "" when none is linked.
func (r *Reporter) customer(ctx context.Context, accountID string) (string, error) {
	evs, err := r.cfg.Store.Load(ctx, account.AccountStream(accountID))
	if err != nil {
		return "", err
	}
	a, err := account.FoldAccount(evs)
	if err != nil {
		return "", err
	}
	return a.StripeCustomerID, nil
}

// checkWindow tells whether a meter event stamped at windowStart is within
// Stripe's limits at now: outcomeTooOld when it is too old (to be
// flagged), outcomeTooNew when it is too far in the future (left for a
// later pass).
func (r *Reporter) checkWindow(recordID, accountID string, windowStart, now time.Time) outcome {
	switch {
	case now.Sub(windowStart) > r.cfg.MaxEventAge:
		return outcomeTooOld
	case windowStart.Sub(now) > maxFutureSkew:
		r.metrics.skipped.WithLabelValues("window_in_future").Inc()
		r.log.Warn("billing record's window starts in the future; not sent yet",
			"record_id", recordID, "account_id", accountID, "window_start", windowStart)
		return outcomeTooNew
	}
	return outcomeNone
}

// flag appends billing.record_flagged at version: the record is frozen at
// quantity and leaves the queue. Its event id derives from the stream, so
// the record is flagged once whoever flags it.
func (r *Reporter) flag(ctx context.Context, recordID, accountID, stream string, windowStart time.Time, quantity, version int64, causation string, now time.Time) (outcome, error) {
	data := events.BillingRecordFlagged{
		RecordID: recordID, AccountID: accountID, WindowStart: windowStart.UTC(), Quantity: quantity, Reason: events.FlagTooOld,
	}
	md := events.Metadata{AccountID: accountID, CorrelationID: recordID, CausationID: causation, Actor: actor}
	e, err := events.New(stream, data, md, now, stream+"|"+data.EventType())
	if err != nil {
		return outcomeNone, &recordError{kind: errKindStore, recordID: recordID, err: err}
	}
	if _, err := r.cfg.Store.Append(ctx, stream, version, e); err != nil {
		if errors.Is(err, events.ErrConflict) {
			return outcomeNone, err
		}
		return outcomeNone, &recordError{kind: errKindStore, recordID: recordID, err: err}
	}
	r.metrics.skipped.WithLabelValues("too_old").Inc()
	r.metrics.flagged.Inc()
	r.log.Error("billing record is too old for Stripe meter events; flagged for manual handling",
		"record_id", recordID, "account_id", accountID, "window_start", windowStart, "quantity", quantity, "max_age", r.cfg.MaxEventAge)
	return outcomeTooOld, nil
}

// close appends billing.record_closed with the read model's quantity and
// the account's customer, or billing.record_flagged when the record is too
// old. It returns a non-zero outcome when the record is left as it is.
func (r *Reporter) close(ctx context.Context, rec billing.Record, stream string, now time.Time) (outcome, error) {
	fail := func(kind string, err error) (outcome, error) {
		return outcomeNone, &recordError{kind: kind, recordID: rec.RecordID, err: err}
	}
	if rec.Quantity < 0 || rec.Unit == "" || rec.AccountID == "" || !rec.WindowEnd.After(rec.WindowStart) {
		return fail(errKindInvalidRecord, fmt.Errorf("invalid record %+v", rec))
	}
	switch out := r.checkWindow(rec.RecordID, rec.AccountID, rec.WindowStart, now); out {
	case outcomeTooOld:
		return r.flag(ctx, rec.RecordID, rec.AccountID, stream, rec.WindowStart, rec.Quantity, 0, "", now)
	case outcomeNone:
	default:
		return out, nil
	}
	cus, err := r.customer(ctx, rec.AccountID)
	if err != nil {
		return fail(errKindAccount, err)
	}
	if cus == "" {
		r.metrics.skipped.WithLabelValues("no_customer").Inc()
		r.log.Debug("billing record waits for a Stripe customer", "record_id", rec.RecordID, "account_id", rec.AccountID)
		return outcomeNoCustomer, nil
	}
	data := events.BillingRecordClosed{
		RecordID:         rec.RecordID,
		AccountID:        rec.AccountID,
		WindowStart:      rec.WindowStart.UTC(),
		WindowEnd:        rec.WindowEnd.UTC(),
		Quantity:         rec.Quantity,
		Unit:             rec.Unit,
		StripeCustomerID: cus,
	}
	md := events.Metadata{AccountID: rec.AccountID, CorrelationID: rec.RecordID, Actor: actor}
	e, err := events.New(stream, data, md, now, stream+"|"+data.EventType())
	if err != nil {
		return fail(errKindStore, err)
	}
	if _, err := r.cfg.Store.Append(ctx, stream, 0, e); err != nil {
		if errors.Is(err, events.ErrConflict) {
			return outcomeNone, err
		}
		return fail(errKindStore, err)
	}
	r.log.Debug("billing record closed", "record_id", rec.RecordID, "account_id", rec.AccountID, "quantity", rec.Quantity)
	return outcomeNone, nil
}

// send sends a closed record's meter event and appends
// billing.usage_reported. Everything it sends comes from the stream
// (quantity and customer), so a retry sends exactly what the first attempt
// sent, even if the account was linked to another customer meanwhile.
func (r *Reporter) send(ctx context.Context, recordID, stream string, st recordState, now time.Time) (outcome, error) {
	c := st.closed
	fail := func(kind string, err error) (outcome, error) {
		return outcomeNone, &recordError{kind: kind, recordID: recordID, err: err}
	}
	if c.RecordID != recordID {
		return fail(errKindInvalidRecord, fmt.Errorf("stream %s closes record %q", stream, c.RecordID))
	}
	switch out := r.checkWindow(recordID, c.AccountID, c.WindowStart, now); out {
	case outcomeTooOld:
		// Closed, then not sent before Stripe's window ended (a long outage).
		return r.flag(ctx, recordID, c.AccountID, stream, c.WindowStart, c.Quantity, st.version, st.closedID, now)
	case outcomeNone:
	default:
		return out, nil
	}
	cus := c.StripeCustomerID
	if cus == "" {
		// Closed before record_closed carried the customer: the account's.
		var err error
		if cus, err = r.customer(ctx, c.AccountID); err != nil {
			return fail(errKindAccount, err)
		}
		if cus == "" {
			// An account's link is never removed, so this is a data problem.
			return fail(errKindAccount, fmt.Errorf("account %s has no Stripe customer", c.AccountID))
		}
	}

	params := &stripe.BillingMeterEventParams{
		EventName:  stripe.String(r.cfg.EventName),
		Identifier: stripe.String(recordID),
		Payload: map[string]string{
			"stripe_customer_id": cus,
			"value":              strconv.FormatInt(c.Quantity, 10),
		},
		Timestamp: stripe.Int64(c.WindowStart.Unix()),
	}
	err := r.createMeterEvent(ctx, recordID, cus, params)
	switch {
	case err == nil:
	case isDuplicateIdentifier(err):
		r.metrics.duplicates.Inc()
		r.log.Info("stripe already had the meter event; recording it as reported", "record_id", recordID, "account_id", c.AccountID)
	case ctx.Err() != nil:
		return outcomeNone, ctx.Err()
	default:
		return outcomeNone, err
	}

	if r.cfg.AfterStripeAccepted != nil {
		if err := r.cfg.AfterStripeAccepted(recordID); err != nil {
			return fail(errKindHook, err)
		}
	}

	data := events.BillingUsageReported{
		RecordID:         recordID,
		AccountID:        c.AccountID,
		StripeCustomerID: cus,
		EventName:        r.cfg.EventName,
		Identifier:       recordID,
		Quantity:         c.Quantity,
		ReportedAt:       now.UTC(),
	}
	md := events.Metadata{AccountID: c.AccountID, CorrelationID: recordID, CausationID: st.closedID, Actor: actor}
	e, err := events.New(stream, data, md, now, stream+"|"+data.EventType())
	if err != nil {
		return fail(errKindStore, err)
	}
	if _, err := r.cfg.Store.Append(ctx, stream, st.version, e); err != nil {
		if errors.Is(err, events.ErrConflict) {
			return outcomeNone, err
		}
		return fail(errKindStore, err)
	}
	r.metrics.reported.Inc()
	r.metrics.quantity.WithLabelValues(c.Unit).Add(float64(c.Quantity))
	r.log.Info("billing record reported to Stripe", "record_id", recordID, "account_id", c.AccountID,
		"stripe_customer_id", cus, "quantity", c.Quantity, "unit", c.Unit)
	return outcomeReported, nil
}

// createMeterEvent makes the Stripe call: with the customer and meter's
// lock held (one call in flight per customer and meter), in its slot of
// the rate limit, retried on 429 and 5xx after Retry-After (or an
// exponential backoff) unless Stripe-Should-Retry says not to. It returns
// nil, the duplicate-identifier error (success for the reporter), or a
// *recordError.
func (r *Reporter) createMeterEvent(ctx context.Context, recordID, customer string, params *stripe.BillingMeterEventParams) error {
	unlock, err := r.inCall.lock(ctx, customer+"|"+r.cfg.EventName)
	if err != nil {
		return err
	}
	defer unlock()
	for attempt := 0; ; attempt++ {
		if err := r.cfg.Sleep(ctx, r.pace.reserve(r.cfg.Now())); err != nil {
			return err
		}
		info := &responseInfo{}
		params.Context = context.WithValue(ctx, responseInfoKey{}, info)
		start := time.Now()
		_, err := r.cfg.Stripe.BillingMeterEvents.New(params)
		r.metrics.stripeSeconds.Observe(time.Since(start).Seconds())
		if err == nil || isDuplicateIdentifier(err) || ctx.Err() != nil {
			return err
		}
		kind := stripeErrorKind(err)
		rerr := &recordError{kind: kind, recordID: recordID, err: fmt.Errorf("stripe meter event: %w", err)}
		if kind != errKindStripeLimited && kind != errKindStripeServer {
			return rerr // rejected (no retry helps) or network (stripe-go retried already)
		}
		_, retryAfter, shouldRetry := info.get()
		wait, hinted := parseRetryAfter(retryAfter, time.Now())
		if !hinted {
			wait = backoff(r.cfg.RetryBase, r.cfg.MaxRetryWait, attempt)
		}
		switch {
		case strings.EqualFold(shouldRetry, "false"):
			return rerr
		case wait > r.cfg.MaxRetryWait:
			return &retryAfterError{wait: wait, err: rerr}
		case attempt >= r.cfg.MaxRetries:
			return rerr
		}
		r.metrics.retries.WithLabelValues(kind).Inc()
		r.log.Warn("stripe pushed back on a meter event; retrying", "record_id", recordID, "kind", kind,
			"attempt", attempt+1, "wait", wait, "retry_after", retryAfter)
		if err := r.cfg.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}
