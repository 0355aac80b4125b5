package stripe_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/schemas"
	"github.com/tollgate/tollgate/stripetest"
)

const (
	meterEventsPath = "/v1/billing/meter_events"
	customerID      = "cus_Tollgate1"
)

// env is one test's PostgreSQL database, event store, stripe-mock and the
// recorder in front of it.
type env struct {
	t      *testing.T
	pool   *pgxpool.Pool
	store  *pgstore.Store
	rec    *stripetest.Recorder
	stripe string // base URL the reporter talks to (the recorder)
	// reg holds the metrics of the reporter made last.
	reg  *prometheus.Registry
	now  time.Time
	rows int
	// sleeps records the waits reporters asked for (rate limit, retries)
	// instead of sleeping.
	sleepMu sync.Mutex
	sleeps  []time.Duration
}

// sleep records a wait instead of sleeping.
func (e *env) sleep(ctx context.Context, d time.Duration) error {
	e.sleepMu.Lock()
	defer e.sleepMu.Unlock()
	e.sleeps = append(e.sleeps, d)
	return ctx.Err()
}

// waits returns the non-zero waits recorded so far.
func (e *env) waits() []time.Duration {
	e.sleepMu.Lock()
	defer e.sleepMu.Unlock()
	var out []time.Duration
	for _, d := range e.sleeps {
		if d > 0 {
			out = append(out, d)
		}
	}
	return out
}

func setup(t *testing.T) *env {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	url, rec := stripetest.NewRecorder(t, stripetest.Shared(t))
	return &env{t: t, pool: pool, store: store, rec: rec, stripe: url, now: time.Now().UTC().Truncate(time.Second)}
}

// account creates an account, linked to customer unless it is empty.
func (e *env) account(id, customer string) {
	e.t.Helper()
	svc := commands.NewService(e.store, func(string) bool { return true }, time.Now)
	_, err := svc.CreateAccount(context.Background(), events.Metadata{Actor: "admin"},
		account.CreateAccount{AccountID: id, Name: "Test " + id, Plan: "pro", StripeCustomerID: customer})
	if err != nil {
		e.t.Fatalf("create account %s: %v", id, err)
	}
}

// link links a Stripe customer to an existing account.
func (e *env) link(accountID, customer string) {
	e.t.Helper()
	ev, err := events.New(account.AccountStream(accountID), events.BillingCustomerLinked{AccountID: accountID, StripeCustomerID: customer},
		events.Metadata{AccountID: accountID, Actor: "stripe"}, time.Now(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.Append(context.Background(), account.AccountStream(accountID), pgstore.AnyVersion, ev); err != nil {
		e.t.Fatal(err)
	}
}

// insert writes a row of the billing_records read model, as the projector would.
func (e *env) insert(r billing.Record) {
	e.t.Helper()
	_, err := e.pool.Exec(context.Background(), `INSERT INTO billing_records
		(record_id, account_id, window_start, window_end, seq, unit, quantity, status)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		r.RecordID, r.AccountID, r.WindowStart, r.WindowEnd, e.rows, r.Unit, r.Quantity, r.Status)
	e.rows++
	if err != nil {
		e.t.Fatalf("insert billing record: %v", err)
	}
}

// update changes a read model row as a (lagging) projector would.
func (e *env) update(recordID, status string, quantity int64) {
	e.t.Helper()
	_, err := e.pool.Exec(context.Background(), `UPDATE billing_records SET status = $2, quantity = $3 WHERE record_id = $1`, recordID, status, quantity)
	if err != nil {
		e.t.Fatal(err)
	}
}

// record is a due record of an hour that ended an hour ago.
func (e *env) record(id, accountID string, quantity int64) billing.Record {
	return billing.Record{
		RecordID: id, AccountID: accountID,
		WindowStart: e.now.Add(-2 * time.Hour), WindowEnd: e.now.Add(-time.Hour),
		Unit: "tokens", Quantity: quantity, Status: billing.StatusOpen,
	}
}

// due reads the billing_records table directly: open records whose window
// ended, and closed records not yet reported.
func (e *env) due(ctx context.Context, now time.Time, limit int) ([]billing.Record, error) {
	rows, err := e.pool.Query(ctx, `SELECT record_id, account_id, window_start, window_end, unit, quantity, status
		FROM billing_records
		WHERE (status = 'open' AND window_end <= $1) OR status = 'closed'
		ORDER BY window_end, record_id LIMIT $2`, now, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []billing.Record
	for rows.Next() {
		var r billing.Record
		if err := rows.Scan(&r.RecordID, &r.AccountID, &r.WindowStart, &r.WindowEnd, &r.Unit, &r.Quantity, &r.Status); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (e *env) reporter(mutate func(*stripe.ReporterConfig)) *stripe.Reporter {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	cfg := stripe.ReporterConfig{
		Store:      e.store,
		Due:        e.due,
		Stripe:     stripe.NewStripeClient(stripetest.TestSecretKey, e.stripe, 10*time.Second),
		Now:        func() time.Time { return e.now },
		Logger:     slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: e.reg,
		Sleep:      e.sleep,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := stripe.NewReporter(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) meterEvents() []stripetest.Request {
	return e.rec.RequestsTo(http.MethodPost, meterEventsPath)
}

// stream loads a record's stream and checks every event against its schema.
func (e *env) stream(recordID string) []events.Envelope {
	e.t.Helper()
	evs, err := e.store.Load(context.Background(), events.StreamBillingRecord+recordID)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := schemas.NewValidator()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range evs {
		raw, err := json.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := v.Validate(ev.Type, ev.SchemaVersion, raw, nil); err != nil {
			e.t.Errorf("event %s does not match its schema: %v", ev.Type, err)
		}
	}
	return evs
}

// metric returns the value of a counter or gauge with the given labels.
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// checkMeterEvent checks one meter event's form against what the record
// must produce.
func checkMeterEvent(t *testing.T, got stripetest.Request, recordID string, quantity int64, windowStart time.Time) {
	t.Helper()
	want := map[string]string{
		"event_name":                  stripe.DefaultEventName,
		"identifier":                  recordID,
		"payload[stripe_customer_id]": customerID,
		"payload[value]":              strconv.FormatInt(quantity, 10),
		"timestamp":                   strconv.FormatInt(windowStart.Unix(), 10),
	}
	for k, v := range want {
		if g := got.Form.Get(k); g != v {
			t.Errorf("meter event %s = %q, want %q (form %v)", k, g, v, got.Form)
		}
	}
	if len(got.Form) != len(want) {
		t.Errorf("meter event has fields %v, want exactly %v", got.Form, want)
	}
}

// checkReported checks that the record's stream is closed at quantity and
// reported once.
func checkReported(t *testing.T, evs []events.Envelope, recordID, accountID string, quantity int64) {
	t.Helper()
	if len(evs) != 2 || evs[0].Type != events.TypeBillingRecordClosed || evs[1].Type != events.TypeBillingUsageReported {
		t.Fatalf("stream has %d events %v, want record_closed then usage_reported", len(evs), types(evs))
	}
	d, err := events.Decode(evs[1])
	if err != nil {
		t.Fatal(err)
	}
	ur := d.(events.BillingUsageReported)
	if ur.RecordID != recordID || ur.AccountID != accountID || ur.StripeCustomerID != customerID ||
		ur.EventName != stripe.DefaultEventName || ur.Identifier != recordID || ur.Quantity != quantity || ur.ReportedAt.IsZero() {
		t.Errorf("usage_reported = %+v", ur)
	}
	if evs[1].Metadata.CausationID != evs[0].EventID.String() || evs[1].Metadata.AccountID != accountID {
		t.Errorf("usage_reported metadata = %+v", evs[1].Metadata)
	}
}

func types(evs []events.Envelope) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func TestReporterReportsDueRecordOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	rec := e.record("br_1", "acc_1", 1234)
	e.insert(rec)
	// Not due yet: the window has not ended.
	later := e.record("br_2", "acc_1", 99)
	later.WindowStart, later.WindowEnd = e.now, e.now.Add(time.Hour)
	e.insert(later)
	r := e.reporter(nil)
	ctx := context.Background()

	n, err := r.RunOnce(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v; want 1, nil", n, err)
	}
	got := e.meterEvents()
	if len(got) != 1 {
		t.Fatalf("%d meter events reached Stripe, want 1: %+v", len(got), got)
	}
	if got[0].Status != http.StatusOK {
		t.Errorf("stripe-mock answered %d", got[0].Status)
	}
	checkMeterEvent(t, got[0], "br_1", 1234, rec.WindowStart)
	evs := e.stream("br_1")
	checkReported(t, evs, "br_1", "acc_1", 1234)
	d, err := events.Decode(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	closed := d.(events.BillingRecordClosed)
	if closed.Quantity != 1234 || closed.Unit != "tokens" || !closed.WindowStart.Equal(rec.WindowStart) || !closed.WindowEnd.Equal(rec.WindowEnd) {
		t.Errorf("record_closed = %+v", closed)
	}
	if evs := e.stream("br_2"); len(evs) != 0 {
		t.Errorf("a record whose window is open was touched: %v", types(evs))
	}

	// The read model still shows the record due (the projector lags):
	// nothing is sent again.
	n, err = r.RunOnce(ctx)
	if err != nil || n != 0 {
		t.Fatalf("second RunOnce = %d, %v; want 0, nil", n, err)
	}
	if got := e.meterEvents(); len(got) != 1 {
		t.Errorf("%d meter events after the second pass, want 1", len(got))
	}
	if evs := e.stream("br_1"); len(evs) != 2 {
		t.Errorf("stream has %v after the second pass", types(evs))
	}
	if v := e.metric("tollgate_billing_records_reported_total", nil); v != 1 {
		t.Errorf("records reported metric = %v", v)
	}
	if v := e.metric("tollgate_billing_quantity_reported_total", map[string]string{"unit": "tokens"}); v != 1234 {
		t.Errorf("quantity reported metric = %v", v)
	}
}

var errCrash = errors.New("simulated crash after Stripe accepted")

func TestReporterCrashAfterStripeAcceptedResendsSameEvent(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	rec := e.record("br_crash", "acc_1", 500)
	e.insert(rec)
	ctx := context.Background()

	crashing := e.reporter(func(c *stripe.ReporterConfig) {
		c.AfterStripeAccepted = func(string) error { return errCrash }
	})
	n, err := crashing.RunOnce(ctx)
	if !errors.Is(err, errCrash) || n != 0 {
		t.Fatalf("RunOnce = %d, %v; want 0 and the crash", n, err)
	}
	evs := e.stream("br_crash")
	if len(evs) != 1 || evs[0].Type != events.TypeBillingRecordClosed {
		t.Fatalf("after the crash the stream has %v, want only record_closed", types(evs))
	}
	if got := e.meterEvents(); len(got) != 1 {
		t.Fatalf("%d meter events before the crash, want 1", len(got))
	}
	if v := e.metric("tollgate_billing_report_errors_total", map[string]string{"kind": "after_stripe_accepted"}); v != 1 {
		t.Errorf("errors metric = %v", v)
	}
	// The row is left open (the projector has not seen record_closed): Due
	// still returns it.

	n, err = e.reporter(nil).RunOnce(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RunOnce after the crash = %d, %v; want 1, nil", n, err)
	}
	got := e.meterEvents()
	if len(got) != 2 {
		t.Fatalf("%d meter events, want 2 (the original and the re-send)", len(got))
	}
	for _, g := range got {
		checkMeterEvent(t, g, "br_crash", 500, rec.WindowStart)
	}
	checkReported(t, e.stream("br_crash"), "br_crash", "acc_1", 500)
}

func TestReporterResendUsesClosedQuantity(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	rec := e.record("br_q", "acc_1", 700)
	e.insert(rec)
	ctx := context.Background()

	crashing := e.reporter(func(c *stripe.ReporterConfig) {
		c.AfterStripeAccepted = func(string) error { return errCrash }
	})
	if _, err := crashing.RunOnce(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("RunOnce: %v, want the crash", err)
	}
	// The projector saw record_closed, and late usage raised the row.
	e.update("br_q", billing.StatusClosed, 900)

	if n, err := e.reporter(nil).RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	got := e.meterEvents()
	if len(got) != 2 {
		t.Fatalf("%d meter events, want 2", len(got))
	}
	for _, g := range got {
		checkMeterEvent(t, g, "br_q", 700, rec.WindowStart)
	}
	checkReported(t, e.stream("br_q"), "br_q", "acc_1", 700)
}

func TestReporterDuplicateIdentifierCountsAsAccepted(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	e.insert(e.record("br_dup", "acc_1", 42))
	ctx := context.Background()

	crashing := e.reporter(func(c *stripe.ReporterConfig) {
		c.AfterStripeAccepted = func(string) error { return errCrash }
	})
	if _, err := crashing.RunOnce(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("RunOnce: %v, want the crash", err)
	}
	// Real Stripe remembers identifiers; stripe-mock does not, so answer
	// the re-send as Stripe does.
	e.rec.Intercept(func(r stripetest.Request) (stripetest.Response, bool) {
		if r.Path != meterEventsPath {
			return stripetest.Response{}, false
		}
		return stripetest.Response{
			Status: http.StatusBadRequest,
			Header: http.Header{"Stripe-Should-Retry": {"false"}},
			Body:   fmt.Sprintf(`{"error":{"type":"invalid_request_error","message":"An event already exists with identifier %s."}}`, r.Form.Get("identifier")),
		}, true
	})
	if n, err := e.reporter(nil).RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v; want 1, nil", n, err)
	}
	got := e.meterEvents()
	if len(got) != 2 || got[1].Status != http.StatusBadRequest {
		t.Fatalf("meter events %+v", got)
	}
	checkMeterEvent(t, got[1], "br_dup", 42, e.record("", "", 0).WindowStart)
	checkReported(t, e.stream("br_dup"), "br_dup", "acc_1", 42)
	if v := e.metric("tollgate_billing_stripe_duplicate_identifiers_total", nil); v != 1 {
		t.Errorf("duplicates metric = %v", v)
	}
}

func TestReporterWaitsForCustomer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_nocus", "")
	e.insert(e.record("br_nocus", "acc_nocus", 10))
	r := e.reporter(nil)
	ctx := context.Background()

	if n, err := r.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("RunOnce = %d, %v; want 0, nil", n, err)
	}
	if got := e.meterEvents(); len(got) != 0 {
		t.Errorf("%d meter events sent for an account without customer", len(got))
	}
	if evs := e.stream("br_nocus"); len(evs) != 0 {
		t.Errorf("stream has %v, want nothing", types(evs))
	}
	if v := e.metric("tollgate_billing_records_skipped_total", map[string]string{"reason": "no_customer"}); v != 1 {
		t.Errorf("skipped metric = %v", v)
	}

	// Once a customer is linked, the record is reported.
	e.link("acc_nocus", customerID)
	if n, err := r.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce after linking = %d, %v; want 1, nil", n, err)
	}
	checkReported(t, e.stream("br_nocus"), "br_nocus", "acc_nocus", 10)
}

func TestReporterFlagsTooOldRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	old := e.record("br_old", "acc_1", 77)
	old.WindowStart, old.WindowEnd = e.now.Add(-40*24*time.Hour), e.now.Add(-40*24*time.Hour+time.Hour)
	e.insert(old)
	e.insert(e.record("br_fresh", "acc_1", 5))

	n, err := e.reporter(nil).RunOnce(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v; want 1 (the fresh record), nil", n, err)
	}
	for _, g := range e.meterEvents() {
		if g.Form.Get("identifier") == "br_old" {
			t.Errorf("a 40-day-old record was sent: %v", g.Form)
		}
	}
	checkFlagged(t, e.stream("br_old"), "br_old", "acc_1", 77, old.WindowStart)
	if v := e.metric("tollgate_billing_records_skipped_total", map[string]string{"reason": "too_old"}); v != 1 {
		t.Errorf("skipped too_old metric = %v", v)
	}
	if v := e.metric("tollgate_billing_records_too_old", nil); v != 1 {
		t.Errorf("too-old gauge = %v", v)
	}
	if v := e.metric("tollgate_billing_records_flagged_total", nil); v != 1 {
		t.Errorf("flagged metric = %v", v)
	}

	// The read model lags (the row is still open): the next pass sees the
	// flag in the stream and neither sends nor flags again.
	if n, err := e.reporter(nil).RunOnce(context.Background()); err != nil || n != 0 {
		t.Fatalf("second RunOnce = %d, %v; want 0, nil", n, err)
	}
	checkFlagged(t, e.stream("br_old"), "br_old", "acc_1", 77, old.WindowStart)
	if v := e.metric("tollgate_billing_records_flagged_total", nil); v != 0 {
		t.Errorf("flagged again: metric = %v", v)
	}
}

// checkFlagged checks that a record's stream holds exactly one
// billing.record_flagged, at the record's quantity.
func checkFlagged(t *testing.T, evs []events.Envelope, recordID, accountID string, quantity int64, windowStart time.Time) {
	t.Helper()
	if len(evs) != 1 || evs[0].Type != events.TypeBillingRecordFlagged {
		t.Fatalf("stream of %s has %v, want one record_flagged", recordID, types(evs))
	}
	d, err := events.Decode(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	f := d.(events.BillingRecordFlagged)
	if f.RecordID != recordID || f.AccountID != accountID || f.Quantity != quantity || f.Reason != events.FlagTooOld || !f.WindowStart.Equal(windowStart) {
		t.Errorf("record_flagged = %+v", f)
	}
}

func TestReporterStopsPassOnRateLimit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	e.insert(e.record("br_a", "acc_1", 1))
	e.insert(e.record("br_b", "acc_1", 2))
	e.rec.Intercept(func(r stripetest.Request) (stripetest.Response, bool) {
		return stripetest.Response{Status: http.StatusTooManyRequests,
			Body: `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests."}}`}, true
	})
	r := e.reporter(func(c *stripe.ReporterConfig) { c.MaxRetries = 2 })
	ctx := context.Background()

	n, err := r.RunOnce(ctx)
	if err == nil || n != 0 {
		t.Fatalf("RunOnce = %d, %v; want 0 and an error", n, err)
	}
	// br_a is tried, then retried twice after an exponential backoff (no
	// Retry-After); then the pass stops and br_b is not tried.
	got := e.meterEvents()
	if len(got) != 3 {
		t.Errorf("%d requests reached Stripe, want 3: one call and two retries, then the pass stops", len(got))
	}
	for _, g := range got {
		if g.Form.Get("identifier") != "br_a" {
			t.Errorf("request for %s after a 429 on br_a", g.Form.Get("identifier"))
		}
	}
	if w := e.waits(); !hasWaits(w, stripe.DefaultRetryBase, 2*stripe.DefaultRetryBase) {
		t.Errorf("waits %v, want the backoffs %v and %v", w, stripe.DefaultRetryBase, 2*stripe.DefaultRetryBase)
	}
	if v := e.metric("tollgate_billing_report_errors_total", map[string]string{"kind": "stripe_rate_limited"}); v != 1 {
		t.Errorf("rate limit metric = %v", v)
	}
	if v := e.metric("tollgate_billing_stripe_retries_total", map[string]string{"kind": "stripe_rate_limited"}); v != 2 {
		t.Errorf("retries metric = %v", v)
	}

	e.rec.Intercept(nil)
	if n, err := r.RunOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RunOnce after the limit = %d, %v; want 2, nil", n, err)
	}
	checkReported(t, e.stream("br_a"), "br_a", "acc_1", 1)
	checkReported(t, e.stream("br_b"), "br_b", "acc_1", 2)
}

func TestReportersRacingReportOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	rec := e.record("br_race", "acc_1", 3)
	e.insert(rec)
	a, b := e.reporter(nil), e.reporter(nil)

	var wg sync.WaitGroup
	total := make([]int, 2)
	for i, r := range []*stripe.Reporter{a, b} {
		wg.Go(func() {
			n, err := r.RunOnce(context.Background())
			if err != nil {
				t.Errorf("reporter %d: %v", i, err)
			}
			total[i] = n
		})
	}
	wg.Wait()
	if total[0]+total[1] < 1 {
		t.Errorf("reported %v, want at least one report", total)
	}
	// Both may have sent before either recorded it: Stripe deduplicates by
	// identifier, so every send must be the same event.
	for _, g := range e.meterEvents() {
		checkMeterEvent(t, g, "br_race", 3, rec.WindowStart)
	}
	checkReported(t, e.stream("br_race"), "br_race", "acc_1", 3)
}

func TestReporterRunStopsWithContext(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.account("acc_1", customerID)
	e.insert(e.record("br_run", "acc_1", 8))
	r := e.reporter(func(c *stripe.ReporterConfig) { c.Interval = 10 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.stream("br_run")) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	checkReported(t, e.stream("br_run"), "br_run", "acc_1", 8)
	if got := e.meterEvents(); len(got) != 1 {
		t.Errorf("%d meter events, want 1", len(got))
	}
}

func TestReporterConfigValidate(t *testing.T) {
	t.Parallel()
	ok := stripe.ReporterConfig{
		Store:  &pgstore.Store{},
		Due:    func(context.Context, time.Time, int) ([]billing.Record, error) { return nil, nil },
		Stripe: stripe.NewStripeClient("sk_test_x", "http://127.0.0.1:1", time.Second),
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*stripe.ReporterConfig){
		"no store":      func(c *stripe.ReporterConfig) { c.Store = nil },
		"no due":        func(c *stripe.ReporterConfig) { c.Due = nil },
		"no stripe":     func(c *stripe.ReporterConfig) { c.Stripe = nil },
		"long name":     func(c *stripe.ReporterConfig) { c.EventName = string(make([]byte, 101)) },
		"neg interval":  func(c *stripe.ReporterConfig) { c.Interval = -time.Second },
		"age over 35d":  func(c *stripe.ReporterConfig) { c.MaxEventAge = 36 * 24 * time.Hour },
		"neg batchsize": func(c *stripe.ReporterConfig) { c.BatchSize = -1 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
		if _, err := stripe.NewReporter(c); err == nil {
			t.Errorf("%s: NewReporter accepted it", name)
		}
	}
}
