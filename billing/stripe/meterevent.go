package stripe

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	stripe "github.com/stripe/stripe-go/v76"
)

// backoff returns interval·2^failures, at most maxWait.
func backoff(interval, maxWait time.Duration, failures int) time.Duration {
	d := interval
	for i := 0; i < failures && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// meterEvent sends a record's meter event: the closed quantity, stamped
// at the window's start, for customer, with the record id as identifier.
// Stripe refusing the identifier as used counts as accepted (a retry after
// a crash).
func (r *Reporter) meterEvent(ctx context.Context, recordID, customer, accountID string, quantity int64, windowStart time.Time) error {
	params := &stripe.BillingMeterEventParams{
		EventName:  stripe.String(r.cfg.EventName),
		Identifier: stripe.String(recordID),
		Payload: map[string]string{
			"stripe_customer_id": customer,
			"value":              strconv.FormatInt(quantity, 10),
		},
		Timestamp: stripe.Int64(windowStart.Unix()),
	}
	err := r.createMeterEvent(ctx, recordID, customer, params)
	switch {
	case err == nil:
	case isDuplicateIdentifier(err):
		r.metrics.duplicates.Inc()
		r.log.Info("stripe already had the meter event; recording it as reported", "record_id", recordID, "account_id", accountID)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return err
	}
	return nil
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
