// Package stripe connects Tollgate to Stripe: the API client, Checkout and
// Billing Portal sessions, webhook verification and handling, the dunning
// loop, and the Reporter, which sends billable usage (billing records) to
// Stripe as meter events, exactly once per record. The decisions are the
// billing package's (a record's stream: see billing.RecordState) and every
// event is written through commands.Service; this package adds the Stripe
// calls, their pacing and retries, metrics and logs.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
)

// Reporter sends due billing records to Stripe as meter events. Its calls
// go through a rate limiter (RateLimit per second) and a lock per customer
// and meter, so at most one call per customer and meter is in flight
// whatever calls RunOnce concurrently (Stripe allows one). Several
// reporters may run at once: the record streams' expected versions let
// only one close a record, and Stripe's identifier uniqueness absorbs a
// duplicate send.
type Reporter struct {
	cfg ReporterConfig
	// svc writes the record streams, as every command does.
	svc     *commands.Service
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
	return &Reporter{cfg: cfg, svc: commands.NewService(cfg.Store, nil, cfg.Now),
		log: cfg.Logger.With("component", "billing-reporter"), metrics: m, pace: newPacer(cfg.RateLimit)}, nil
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

// errBackpressure marks a pass stopped because Stripe pushed back.
var errBackpressure = errors.New("stripe pushed back; pass stopped")

// RunOnce handles one batch of due records and returns how many it
// reported to Stripe. An error with one record does not stop the pass; the
// errors are joined into the returned one. A rate limit, server error or
// network failure from Stripe stops the pass: the remaining records wait
// for the next one, which Run delays (backoff).
func (r *Reporter) RunOnce(ctx context.Context) (reported int, err error) {
	now := r.cfg.Now()
	svc := r.svc.At(now)
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
		out, err := r.report(ctx, svc, rec, now)
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

// maxAttempts bounds how often one record's stream is reloaded after a
// concurrent append.
const maxAttempts = 3

// report moves one record as far as it can: close it, send it, record that
// Stripe accepted it. svc stamps the pass's events at its start.
func (r *Reporter) report(ctx context.Context, svc *commands.Service, rec billing.Record, now time.Time) (outcome, error) {
	if err := billing.CheckRecordID(rec.RecordID); err != nil {
		return outcomeNone, &recordError{kind: errKindInvalidRecord, recordID: rec.RecordID, err: err}
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		st, err := svc.BillingRecord(ctx, rec.RecordID)
		if err != nil {
			return outcomeNone, &recordError{kind: errKindStore, recordID: rec.RecordID, err: err}
		}
		var out outcome
		switch st.Next() {
		case billing.StepReported:
			return outcomeAlreadyReported, nil
		case billing.StepFlagged:
			// Flagged earlier; the read model has not caught up yet.
			return outcomeTooOld, nil
		case billing.StepClose:
			out, err = r.close(ctx, svc, rec, st, now)
			if err == nil && out == outcomeNone {
				continue // closed: reload and send what is stored.
			}
		default:
			out, err = r.send(ctx, svc, rec, st, now)
		}
		if errors.Is(err, events.ErrConflict) {
			continue // another reporter moved it: reload.
		}
		return out, err
	}
	return outcomeNone, &recordError{kind: errKindStore, recordID: rec.RecordID,
		err: fmt.Errorf("stream %s kept changing under %d attempts", billing.RecordStream(rec.RecordID), maxAttempts)}
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
	switch billing.CheckWindow(windowStart, now, r.cfg.MaxEventAge) {
	case billing.WindowTooOld:
		return outcomeTooOld
	case billing.WindowTooNew:
		r.metrics.skipped.WithLabelValues("window_in_future").Inc()
		r.log.Warn("billing record's window starts in the future; not sent yet",
			"record_id", recordID, "account_id", accountID, "window_start", windowStart)
		return outcomeTooNew
	}
	return outcomeNone
}

// metadata is the envelope metadata of the reporter's events on a record.
func metadata(accountID, recordID, causation string) events.Metadata {
	return events.Metadata{AccountID: accountID, CorrelationID: recordID, CausationID: causation, Actor: actor}
}

// storeError wraps a failed append as a record's store error, except a
// conflict, which the caller answers by loading the record again.
func storeError(recordID string, err error) error {
	if err == nil || errors.Is(err, events.ErrConflict) {
		return err
	}
	return &recordError{kind: errKindStore, recordID: recordID, err: err}
}

// flag appends billing.record_flagged: the record is frozen (at its closed
// quantity when it was closed, else at the read model's) and leaves the
// queue. Its event id derives from the stream, so the record is flagged
// once whoever flags it.
func (r *Reporter) flag(ctx context.Context, svc *commands.Service, rec billing.Record, st billing.RecordState) (outcome, error) {
	accountID, windowStart, quantity := rec.AccountID, rec.WindowStart, rec.Quantity
	if c := st.Closed; c != nil {
		accountID, windowStart, quantity = c.AccountID, c.WindowStart, c.Quantity
	}
	if err := svc.FlagRecord(ctx, metadata(accountID, rec.RecordID, st.ClosedID), st, rec); err != nil {
		return outcomeNone, storeError(rec.RecordID, err)
	}
	r.metrics.skipped.WithLabelValues("too_old").Inc()
	r.metrics.flagged.Inc()
	r.log.Error("billing record is too old for Stripe meter events; flagged for manual handling",
		"record_id", rec.RecordID, "account_id", accountID, "window_start", windowStart, "quantity", quantity, "max_age", r.cfg.MaxEventAge)
	return outcomeTooOld, nil
}

// close appends billing.record_closed with the read model's quantity and
// the account's customer, or billing.record_flagged when the record is too
// old. It returns a non-zero outcome when the record is left as it is.
func (r *Reporter) close(ctx context.Context, svc *commands.Service, rec billing.Record, st billing.RecordState, now time.Time) (outcome, error) {
	if err := billing.CheckRecord(rec); err != nil {
		return outcomeNone, &recordError{kind: errKindInvalidRecord, recordID: rec.RecordID, err: err}
	}
	switch out := r.checkWindow(rec.RecordID, rec.AccountID, rec.WindowStart, now); out {
	case outcomeTooOld:
		return r.flag(ctx, svc, rec, st)
	case outcomeNone:
	default:
		return out, nil
	}
	cus, err := r.customer(ctx, rec.AccountID)
	if err != nil {
		return outcomeNone, &recordError{kind: errKindAccount, recordID: rec.RecordID, err: err}
	}
	if cus == "" {
		r.metrics.skipped.WithLabelValues("no_customer").Inc()
		r.log.Debug("billing record waits for a Stripe customer", "record_id", rec.RecordID, "account_id", rec.AccountID)
		return outcomeNoCustomer, nil
	}
	if err := svc.CloseRecord(ctx, metadata(rec.AccountID, rec.RecordID, ""), st, rec, cus); err != nil {
		return outcomeNone, storeError(rec.RecordID, err)
	}
	r.log.Debug("billing record closed", "record_id", rec.RecordID, "account_id", rec.AccountID, "quantity", rec.Quantity)
	return outcomeNone, nil
}

// send sends a closed record's meter event and appends
// billing.usage_reported. Everything it sends comes from the stream
// (quantity and customer), so a retry sends exactly what the first attempt
// sent, even if the account was linked to another customer meanwhile.
func (r *Reporter) send(ctx context.Context, svc *commands.Service, rec billing.Record, st billing.RecordState, now time.Time) (outcome, error) {
	c, recordID := st.Closed, rec.RecordID
	fail := func(kind string, err error) (outcome, error) {
		return outcomeNone, &recordError{kind: kind, recordID: recordID, err: err}
	}
	if c.RecordID != recordID {
		return fail(errKindInvalidRecord, fmt.Errorf("stream %s closes record %q", billing.RecordStream(recordID), c.RecordID))
	}
	switch out := r.checkWindow(recordID, c.AccountID, c.WindowStart, now); out {
	case outcomeTooOld:
		// Closed, then not sent before Stripe's window ended (a long outage).
		return r.flag(ctx, svc, rec, st)
	case outcomeNone:
	default:
		return out, nil
	}
	cus, err := r.closedCustomer(ctx, c)
	if err != nil {
		return fail(errKindAccount, err)
	}
	if err := r.meterEvent(ctx, recordID, cus, c.AccountID, c.Quantity, c.WindowStart); err != nil {
		return outcomeNone, err
	}
	if r.cfg.AfterStripeAccepted != nil {
		if err := r.cfg.AfterStripeAccepted(recordID); err != nil {
			return fail(errKindHook, err)
		}
	}
	if err := svc.RecordReported(ctx, metadata(c.AccountID, recordID, st.ClosedID), st, recordID, cus, r.cfg.EventName); err != nil {
		return outcomeNone, storeError(recordID, err)
	}
	r.metrics.reported.Inc()
	r.metrics.quantity.WithLabelValues(c.Unit).Add(float64(c.Quantity))
	r.log.Info("billing record reported to Stripe", "record_id", recordID, "account_id", c.AccountID,
		"stripe_customer_id", cus, "quantity", c.Quantity, "unit", c.Unit)
	return outcomeReported, nil
}

// closedCustomer is the customer a closed record goes to: the one it was
// closed with, or the account's for a record closed before
// billing.record_closed carried the customer.
func (r *Reporter) closedCustomer(ctx context.Context, c *events.BillingRecordClosed) (string, error) {
	if c.StripeCustomerID != "" {
		return c.StripeCustomerID, nil
	}
	cus, err := r.customer(ctx, c.AccountID)
	if err != nil {
		return "", err
	}
	if cus == "" {
		// An account's link is never removed, so this is a data problem.
		return "", fmt.Errorf("account %s has no Stripe customer", c.AccountID)
	}
	return cus, nil
}
