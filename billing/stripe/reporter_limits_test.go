package stripe_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/stripetest"
)

// hasWaits reports whether want appears, in order, among got.
func hasWaits(got []time.Duration, want ...time.Duration) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// project applies every stored event to the live billing_records read
// model with the real projector, as the running projector would. It waits
// until the projector applied the newest event: the store's readers see a
// transaction only once every older one in the cluster ended, which on a
// busy server can take a moment.
func (e *env) project() {
	e.t.Helper()
	ctx := context.Background()
	set, err := projections.NewSet(e.pool, projections.LiveSchema, nil, nil,
		records.Projectors(projections.LiveSchema, time.Hour, billing.UnitTokens)...)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := projections.NewFollower(projections.FollowerConfig{Set: set, Store: e.store})
	if err != nil {
		e.t.Fatal(err)
	}
	var head int64
	if err := e.pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&head); err != nil {
		e.t.Fatal(err)
	}
	var applied int64
	if err := e.pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events e JOIN projection_streams g
		ON g.stream_id = e.stream_id AND e.stream_version <= g.version`).Scan(&applied); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for applied < head {
		if _, err := f.RunOnce(ctx); err != nil {
			e.t.Fatalf("project: %v", err)
		}
		applied = max(applied, set.LastPosition())
		if time.Now().After(deadline) {
			e.t.Fatalf("projector at position %d, events up to %d after 30s", applied, head)
		}
		if applied < head {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// modelDue is the wiring's adapter of records.Due.
func (e *env) modelDue(ctx context.Context, now time.Time, limit int) ([]billing.Record, error) {
	recs, err := records.Due(ctx, e.pool, projections.LiveSchema, now, 0, limit)
	if err != nil {
		return nil, err
	}
	out := make([]billing.Record, len(recs))
	for i, r := range recs {
		out[i] = billing.Record{RecordID: r.RecordID, AccountID: r.AccountID, WindowStart: r.WindowStart,
			WindowEnd: r.WindowEnd, Unit: r.Unit, Quantity: r.Quantity, Status: r.Status}
	}
	return out, nil
}

func (e *env) closedEvent(recordID string) events.BillingRecordClosed {
	e.t.Helper()
	evs := e.stream(recordID)
	if len(evs) == 0 || evs[0].Type != events.TypeBillingRecordClosed {
		e.t.Fatalf("stream of %s has %v, want record_closed first", recordID, types(evs))
	}
	d, err := events.Decode(evs[0])
	if err != nil {
		e.t.Fatal(err)
	}
	return d.(events.BillingRecordClosed)
}

func TestReporterResendsToTheClosedRecordsCustomer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	rec := e.record("br_cus", "acc_1", 321)
	e.insert(rec)
	ctx := context.Background()

	crashing := e.reporter(func(c *stripe.ReporterConfig) {
		c.AfterStripeAccepted = func(string) error { return errCrash }
	})
	if _, err := crashing.RunOnce(ctx); err == nil {
		t.Fatal("RunOnce: want the crash")
	}
	if c := e.closedEvent("br_cus"); c.StripeCustomerID != customerID {
		t.Fatalf("record_closed.stripe_customer_id = %q, want %q", c.StripeCustomerID, customerID)
	}
	// The account moves to another customer before the re-send.
	e.link("acc_1", "cus_Other2")

	if n, err := e.reporter(nil).RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce after the crash = %d, %v; want 1, nil", n, err)
	}
	got := e.meterEvents()
	if len(got) != 2 {
		t.Fatalf("%d meter events, want 2 (the original and the re-send)", len(got))
	}
	for _, g := range got {
		checkMeterEvent(t, g, "br_cus", 321, rec.WindowStart) // payload customer = customerID
	}
	checkReported(t, e.stream("br_cus"), "br_cus", "acc_1", 321) // usage_reported customer = customerID

	// A new record goes to the account's new customer.
	e.insert(e.record("br_new", "acc_1", 5))
	if n, err := e.reporter(nil).RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce for the new record = %d, %v; want 1, nil", n, err)
	}
	if c := e.closedEvent("br_new"); c.StripeCustomerID != "cus_Other2" {
		t.Errorf("new record closed for %q, want cus_Other2", c.StripeCustomerID)
	}
	last := e.meterEvents()[2]
	if last.Form.Get("identifier") != "br_new" || last.Form.Get("payload[stripe_customer_id]") != "cus_Other2" {
		t.Errorf("new record's meter event %v", last.Form)
	}
}

func TestReporterFlaggedRecordsDoNotStarveFreshOnes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	const batch, old = 3, 7
	var olds []billing.Record
	for i := range old {
		r := e.record("br_old"+string(rune('a'+i)), "acc_1", int64(100+i))
		r.WindowStart = e.now.Add(-40*24*time.Hour + time.Duration(i)*time.Hour)
		r.WindowEnd = r.WindowStart.Add(time.Hour)
		e.insert(r)
		olds = append(olds, r)
	}
	fresh := e.record("br_fresh", "acc_1", 9)
	e.insert(fresh)
	// An account without a Stripe customer, with more records than a
	// batch: they are not due at all, so they cannot crowd out acc_1's.
	e.account("acc_nocust", "")
	for i := range 2 * batch {
		r := e.record(fmt.Sprintf("br_free%d", i), "acc_nocust", 5)
		// Older than acc_1's, so they would come first in the queue.
		r.WindowStart = e.now.Add(-48*time.Hour + time.Duration(i)*time.Hour)
		r.WindowEnd = r.WindowStart.Add(time.Hour)
		e.insert(r)
	}
	e.project() // the projector has seen the accounts' customers
	ctx := context.Background()
	r := e.reporter(func(c *stripe.ReporterConfig) { c.Due, c.BatchSize = e.modelDue, batch })

	// Each pass flags a batch of old records; the projector takes them out
	// of the queue, so the fresh record is reached after old/batch passes.
	reportedAt := -1
	for pass := 1; pass <= 10 && reportedAt < 0; pass++ {
		n, err := r.RunOnce(ctx)
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if n == 1 {
			reportedAt = pass
		}
		e.project()
	}
	if want := old/batch + 1; reportedAt < 0 || reportedAt > want {
		t.Fatalf("fresh record reported in pass %d, want by pass %d", reportedAt, want)
	}
	checkReported(t, e.stream("br_fresh"), "br_fresh", "acc_1", 9)
	for _, g := range e.meterEvents() {
		if g.Form.Get("identifier") != "br_fresh" {
			t.Errorf("a too-old record reached Stripe: %v", g.Form)
		}
	}
	for _, o := range olds {
		checkFlagged(t, e.stream(o.RecordID), o.RecordID, "acc_1", o.Quantity, o.WindowStart)
	}
	if due, err := e.modelDue(ctx, e.now, 100); err != nil || len(due) != 0 {
		t.Errorf("due after flagging = %v, %v; want none", due, err)
	}
	var flagged int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM billing_records WHERE status = $1`, billing.StatusFlagged).Scan(&flagged); err != nil || flagged != old {
		t.Errorf("%d flagged rows (%v), want %d", flagged, err, old)
	}

	// The reconciliation still shows every flagged quantity as not reported.
	seen := map[string]billing.Difference{}
	for _, o := range olds {
		period := o.WindowStart.Format("2006-01")
		rec, err := records.Reconcile(ctx, e.pool, billing.UnitTokens, period)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Agrees {
			t.Errorf("period %s agrees with flagged records in it", period)
		}
		for _, a := range rec.Accounts {
			for _, d := range a.Differences {
				seen[d.RecordID] = d
			}
		}
	}
	for _, o := range olds {
		d, ok := seen[o.RecordID]
		flagID := e.stream(o.RecordID)[0].EventID.String()
		if !ok || d.Kind != "record_not_reported" || d.Status != billing.StatusFlagged || d.Quantity != o.Quantity || !slices.Contains(d.EventIDs, flagID) {
			t.Errorf("difference for %s = %+v (found %v), want record_not_reported, flagged, %d, with %s", o.RecordID, d, ok, o.Quantity, flagID)
		}
	}
}

// rateLimited answers the first n meter events with a 429 carrying
// headers, then lets requests through to stripe-mock.
func rateLimited(n int, header http.Header) stripetest.Interceptor {
	var mu sync.Mutex
	return func(r stripetest.Request) (stripetest.Response, bool) {
		mu.Lock()
		defer mu.Unlock()
		if r.Path != meterEventsPath || n == 0 {
			return stripetest.Response{}, false
		}
		n--
		return stripetest.Response{Status: http.StatusTooManyRequests, Header: header,
			Body: `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests."}}`}, true
	}
}

func TestReporterRetriesAfterRetryAfter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	rec := e.record("br_429", "acc_1", 12)
	e.insert(rec)
	e.rec.Intercept(rateLimited(2, http.Header{"Retry-After": {"7"}}))

	n, err := e.reporter(nil).RunOnce(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v; want 1, nil (reported after two 429s)", n, err)
	}
	got := e.meterEvents()
	if len(got) != 3 || got[0].Status != http.StatusTooManyRequests || got[1].Status != http.StatusTooManyRequests || got[2].Status != http.StatusOK {
		t.Fatalf("requests %+v, want 429, 429, 200", got)
	}
	for _, g := range got {
		checkMeterEvent(t, g, "br_429", 12, rec.WindowStart) // the same event each time
	}
	if w := e.waits(); !hasWaits(w, 7*time.Second, 7*time.Second) {
		t.Errorf("waits %v, want Retry-After's 7s twice", w)
	}
	checkReported(t, e.stream("br_429"), "br_429", "acc_1", 12)
	if v := e.metric("tollgate_billing_stripe_retries_total", map[string]string{"kind": "stripe_rate_limited"}); v != 2 {
		t.Errorf("retries metric = %v", v)
	}
}

func TestReporterHonoursStripeShouldRetryFalse(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	e.insert(e.record("br_nr", "acc_1", 1))
	e.insert(e.record("br_nr2", "acc_1", 2))
	e.rec.Intercept(rateLimited(1, http.Header{"Stripe-Should-Retry": {"false"}, "Retry-After": {"1"}}))

	n, err := e.reporter(nil).RunOnce(context.Background())
	if err == nil || n != 0 {
		t.Fatalf("RunOnce = %d, %v; want 0 and the 429", n, err)
	}
	if got := e.meterEvents(); len(got) != 1 {
		t.Errorf("%d requests, want 1: no retry when Stripe-Should-Retry is false, and the pass stops", len(got))
	}
	if w := e.waits(); slices.Contains(w, time.Second) {
		t.Errorf("waited %v after Stripe said not to retry", w)
	}
}

func TestReporterLongRetryAfterStopsThePass(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	e.insert(e.record("br_long", "acc_1", 1))
	e.rec.Intercept(rateLimited(1, http.Header{"Retry-After": {"120"}}))

	n, err := e.reporter(func(c *stripe.ReporterConfig) { c.MaxRetryWait = time.Minute }).RunOnce(context.Background())
	if err == nil || n != 0 {
		t.Fatalf("RunOnce = %d, %v; want 0 and an error", n, err)
	}
	if got := e.meterEvents(); len(got) != 1 {
		t.Errorf("%d requests, want 1: a Retry-After over MaxRetryWait is not waited within the pass", len(got))
	}
	if w := e.waits(); slices.Contains(w, 120*time.Second) {
		t.Errorf("waited %v within the pass", w)
	}
}

func TestReporterRateLimitSpacesCalls(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	for _, id := range []string{"br_r1", "br_r2", "br_r3", "br_r4"} {
		e.insert(e.record(id, "acc_1", 1))
	}
	// The test clock stands still, so the limiter's waits are exact.
	n, err := e.reporter(func(c *stripe.ReporterConfig) { c.RateLimit = 4 }).RunOnce(context.Background())
	if err != nil || n != 4 {
		t.Fatalf("RunOnce = %d, %v; want 4, nil", n, err)
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond}
	if w := e.waits(); !slices.Equal(w, want) {
		t.Errorf("waits %v, want %v (4 calls per second, evenly spaced)", w, want)
	}
}

func TestReporterOneCallInFlightPerCustomerAndMeter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	e.account("acc_2", "cus_Second2")
	for _, id := range []string{"br_c1", "br_c2", "br_c3"} {
		e.insert(e.record(id, "acc_1", 1))
	}
	e.insert(e.record("br_d1", "acc_2", 1))
	var mu sync.Mutex
	inFlight, most := map[string]int{}, map[string]int{}
	e.rec.Intercept(func(r stripetest.Request) (stripetest.Response, bool) {
		if r.Path != meterEventsPath {
			return stripetest.Response{}, false
		}
		key := r.Form.Get("payload[stripe_customer_id]") + "|" + r.Form.Get("event_name")
		mu.Lock()
		inFlight[key]++
		most[key] = max(most[key], inFlight[key])
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // widen the window an overlap would show in
		mu.Lock()
		inFlight[key]--
		mu.Unlock()
		return stripetest.Response{}, false
	})
	// One reporter, passes running concurrently (they race for the same
	// records and would send each concurrently without the lock).
	r := e.reporter(nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := r.RunOnce(context.Background()); err != nil {
				t.Errorf("RunOnce: %v", err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for key, n := range most {
		if n > 1 {
			t.Errorf("%d calls in flight at once for %s, want at most 1", n, key)
		}
	}
	if len(most) != 2 {
		t.Errorf("calls seen for %v, want both customers", most)
	}
	for _, id := range []string{"br_c1", "br_c2", "br_c3"} {
		checkReported(t, e.stream(id), id, "acc_1", 1)
	}
	d := e.closedEvent("br_d1")
	if d.StripeCustomerID != "cus_Second2" {
		t.Errorf("br_d1 closed for %q", d.StripeCustomerID)
	}
}
