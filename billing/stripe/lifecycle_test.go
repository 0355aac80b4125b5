package stripe_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/billing/records/recordstest"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/stripetest"
)

const whSecret = "whsec_test_tollgate"

// faultStore fails appends while fail is set: a database failure after a
// webhook was verified.
type faultStore struct {
	commands.EventStore
	mu   sync.Mutex
	fail bool
}

var errDatabaseDown = errors.New("simulated database failure")

func (f *faultStore) Append(ctx context.Context, stream string, v int64, evs ...events.Envelope) ([]events.Envelope, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return nil, errDatabaseDown
	}
	return f.EventStore.Append(ctx, stream, v, evs...)
}

func (f *faultStore) setFail(v bool) { f.mu.Lock(); f.fail = v; f.mu.Unlock() }

// life is one lifecycle test's world: PostgreSQL, stripe-mock behind a
// recorder, the service, checkout, webhooks and dunning, on a test clock.
type life struct {
	t     *testing.T
	pool  *pgxpool.Pool
	store *faultStore
	svc   *commands.Service
	cfg   *config.Config
	rec   *stripetest.Recorder
	co    *stripe.Checkout
	wh    *stripe.Webhooks
	now   time.Time
	// fresh waits for the billing read models to catch up.
	fresh func(context.Context) error
}

func newLife(t *testing.T) *life {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	ps, err := pgstore.New(pool, nil, records.CustomerLinksInline{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Plans[0].Models = []string{"echo"}
	cfg.Plans[1].StripePrice, cfg.Plans[1].StripeMeteredPrice = "price_pro", "price_pro_metered"
	cfg.Billing.CheckoutSuccessURL = "https://app.example/billing/done"
	cfg.Billing.CheckoutCancelURL = "https://app.example/billing"
	cfg.Billing.PortalReturnURL = "https://app.example/settings"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l := &life{t: t, pool: pool, store: &faultStore{EventStore: ps}, cfg: cfg, now: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)}
	l.fresh = recordstest.Follow(t, pool, ps)
	l.svc = commands.NewService(l.store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, func() time.Time { return l.now })
	url, rec := stripetest.NewRecorder(t, stripetest.Shared(t))
	l.rec = rec
	l.co = stripe.NewCheckout(l.svc, stripe.NewStripeClient(stripetest.TestSecretKey, url, 0), cfg, nil)
	if l.wh, err = stripe.NewWebhooks(stripe.WebhookConfig{Service: l.svc, Accounts: records.CustomerLinks{Q: pool}, Config: cfg, Secret: whSecret,
		Registerer: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *life) account(id string) {
	l.t.Helper()
	if _, err := l.svc.CreateAccount(context.Background(), events.Metadata{Actor: "admin"},
		account.CreateAccount{AccountID: id, Name: "Test " + id, Email: id + "@example.com", Plan: "free"}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *life) get(id string) account.Account {
	l.t.Helper()
	a, err := l.svc.Account(context.Background(), id)
	if err != nil {
		l.t.Fatal(err)
	}
	return a
}

// payload builds a Stripe event body.
func payload(id, typ, apiVersion string, created time.Time, object map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "object": "event", "type": typ, "api_version": apiVersion,
		"created": created.Unix(), "livemode": false, "pending_webhooks": 1, "data": map[string]any{"object": object}})
	return b
}

// deliver signs body as Stripe does at the test clock's time and delivers it.
func (l *life) deliver(body []byte) (stripe.WebhookResult, error) {
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: whSecret, Timestamp: time.Now()})
	return l.wh.Handle(context.Background(), sp.Payload, sp.Header)
}

func (l *life) mustDeliver(body []byte, outcome string) stripe.WebhookResult {
	l.t.Helper()
	res, err := l.deliver(body)
	if err != nil {
		l.t.Fatalf("deliver: %v", err)
	}
	if !res.Duplicate && res.Outcome != outcome {
		l.t.Fatalf("outcome %q, want %q (%+v)", res.Outcome, outcome, res)
	}
	return res
}

func (l *life) eventCount() int {
	l.t.Helper()
	var n int
	if err := l.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		l.t.Fatal(err)
	}
	return n
}

func (l *life) types(accountID string) []string {
	l.t.Helper()
	evs, err := l.store.Load(context.Background(), account.AccountStream(accountID))
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func subscription(id, cus, status string, prices ...string) map[string]any {
	var items []any
	for _, p := range prices {
		items = append(items, map[string]any{"object": "subscription_item", "price": map[string]any{"id": p, "object": "price"}})
	}
	return map[string]any{"id": id, "object": "subscription", "customer": cus, "status": status,
		"items": map[string]any{"object": "list", "data": items}, "metadata": map[string]string{}}
}

func invoice(id, cus string) map[string]any {
	return map[string]any{"id": id, "object": "invoice", "customer": cus, "subscription": "sub_Life1"}
}

// TestBillingLifecycle walks checkout → active → payment failed → grace →
// downgraded → paid → restored, with duplicate and reordered deliveries.
func TestBillingLifecycle(t *testing.T) {
	t.Parallel()
	l := newLife(t)
	ctx := context.Background()
	l.account("acc_life")
	md := events.Metadata{AccountID: "acc_life", Actor: "key:key_1"}

	// Checkout: the customer is created and linked, the session sells the
	// plan's flat and metered prices.
	s, err := l.co.Checkout(ctx, md, "acc_life", "pro")
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	if s.URL == "" || s.ID == "" || s.CustomerID == "" {
		t.Fatalf("session %+v", s)
	}
	a := l.get("acc_life")
	if a.StripeCustomerID != s.CustomerID {
		t.Fatalf("customer linked %q, session's %q", a.StripeCustomerID, s.CustomerID)
	}
	cus := a.StripeCustomerID
	sessions := l.rec.RequestsTo(http.MethodPost, "/v1/checkout/sessions")
	if len(sessions) != 1 {
		t.Fatalf("%d checkout sessions created", len(sessions))
	}
	f := sessions[0].Form
	for k, want := range map[string]string{"mode": "subscription", "customer": cus, "client_reference_id": "acc_life",
		"line_items[0][price]": "price_pro", "line_items[0][quantity]": "1", "line_items[1][price]": "price_pro_metered",
		"line_items[1][quantity]": "", "metadata[plan]": "pro", "subscription_data[metadata][account_id]": "acc_life"} {
		if got := f.Get(k); got != want {
			t.Errorf("checkout session %s = %q, want %q", k, got, want)
		}
	}
	customers := l.rec.RequestsTo(http.MethodPost, "/v1/customers")
	if len(customers) != 1 || customers[0].Header.Get("Idempotency-Key") != "tollgate-customer-acc_life" {
		t.Fatalf("customer requests %+v", customers)
	}
	// A second checkout (the first was abandoned) reuses the customer.
	if _, err := l.co.Checkout(ctx, md, "acc_life", "pro"); err != nil {
		t.Fatal(err)
	}
	if n := len(l.rec.RequestsTo(http.MethodPost, "/v1/customers")); n != 1 {
		t.Errorf("%d customers created, want 1", n)
	}
	if _, err := l.co.Checkout(ctx, md, "acc_life", "platinum"); !errors.Is(err, domainerr.ErrInvalid) {
		t.Errorf("unknown plan: %v", err)
	}
	if _, err := l.co.Checkout(ctx, md, "acc_life", "free"); !errors.Is(err, domainerr.ErrInvalid) {
		t.Errorf("plan without price: %v", err)
	}

	// checkout.session.completed → active on pro.
	t0 := l.now
	completed := payload("evt_Checkout1", "checkout.session.completed", "2023-10-16", t0, map[string]any{
		"id": "cs_test_1", "object": "checkout.session", "mode": "subscription", "customer": cus,
		"subscription": "sub_Life1", "client_reference_id": "acc_life", "metadata": map[string]string{"account_id": "acc_life", "plan": "pro"},
	})
	l.mustDeliver(completed, events.WebhookApplied)
	a = l.get("acc_life")
	if a.EffectivePlan() != "pro" || a.Billing.SubscriptionStatus != "active" || a.Billing.SubscriptionID != "sub_Life1" {
		t.Fatalf("after checkout: plan %q, billing %+v", a.EffectivePlan(), a.Billing)
	}
	if _, err := l.co.Checkout(ctx, md, "acc_life", "pro"); !errors.Is(err, stripe.ErrAlreadySubscribed) {
		t.Errorf("checkout while subscribed: %v", err)
	}
	portal, err := l.co.Portal(ctx, "acc_life")
	if err != nil || portal.URL == "" {
		t.Fatalf("Portal = %+v, %v", portal, err)
	}
	if p := l.rec.RequestsTo(http.MethodPost, "/v1/billing_portal/sessions"); len(p) != 1 || p[0].Form.Get("customer") != cus ||
		p[0].Form.Get("return_url") != "https://app.example/settings" {
		t.Errorf("portal requests %+v", p)
	}

	// The same delivery again: nothing new.
	before := l.eventCount()
	if res := l.mustDeliver(completed, events.WebhookApplied); !res.Duplicate {
		t.Errorf("redelivery not seen as duplicate: %+v", res)
	}
	if l.eventCount() != before {
		t.Errorf("redelivery appended events")
	}

	// A subscription.created rendered before checkout completed arrives
	// late: recorded, ignored.
	l.mustDeliver(payload("evt_SubCreatedLate", "customer.subscription.created", "2023-10-16", t0.Add(-time.Minute),
		subscription("sub_Life1", cus, "incomplete", "price_pro", "price_pro_metered")), events.WebhookStale)
	if a = l.get("acc_life"); a.Billing.SubscriptionStatus != "active" || a.EffectivePlan() != "pro" {
		t.Fatalf("stale event rolled state back: %+v", a.Billing)
	}

	// Payment fails: grace period, plan kept.
	l.now = t0.Add(30 * 24 * time.Hour)
	failedAt := l.now
	l.mustDeliver(payload("evt_Failed1", "invoice.payment_failed", "2023-10-16", failedAt, invoice("in_Life1", cus)), events.WebhookApplied)
	a = l.get("acc_life")
	grace := failedAt.Add(l.cfg.Billing.GracePeriod.D())
	if !a.Billing.GraceUntil.Equal(grace) || a.EffectivePlan() != "pro" {
		t.Fatalf("after failure: grace %v (want %v), plan %q", a.Billing.GraceUntil, grace, a.EffectivePlan())
	}

	dun, err := stripe.NewDunning(stripe.DunningConfig{Service: l.svc, ReadModels: l.pool, FallbackPlan: "free",
		Now: func() time.Time { return l.now }, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	l.now = grace.Add(-time.Second)
	if n, err := l.dunning(dun); err != nil || n != 0 {
		t.Fatalf("dunning within grace = %d, %v", n, err)
	}
	// Stripe retries the payment, fails again: the grace does not move.
	l.mustDeliver(payload("evt_Failed2", "invoice.payment_failed", "2023-10-16", grace.Add(-time.Hour), invoice("in_Life1", cus)), events.WebhookApplied)
	l.now = grace
	if n, err := l.dunning(dun); err != nil || n != 1 {
		t.Fatalf("dunning at grace end = %d, %v; want 1", n, err)
	}
	a = l.get("acc_life")
	if a.EffectivePlan() != "free" || a.Plan != "pro" {
		t.Fatalf("after grace: effective %q, plan %q", a.EffectivePlan(), a.Plan)
	}
	if free, _ := l.cfg.Plan(a.EffectivePlan()); free.AllowsModel("gpt-4o") || !free.AllowsModel("echo") {
		t.Errorf("fallback plan's models: %v", free.Models)
	}
	if n, err := l.dunning(dun); err != nil || n != 0 {
		t.Fatalf("second dunning pass = %d, %v; want 0", n, err)
	}

	// Paid: restored. The late first failure, redelivered, changes nothing.
	l.now = grace.Add(time.Hour)
	l.mustDeliver(payload("evt_Paid1", "invoice.paid", "2023-10-16", l.now, invoice("in_Life1", cus)), events.WebhookApplied)
	l.mustDeliver(payload("evt_Failed0", "invoice.payment_failed", "2023-10-16", failedAt.Add(-time.Minute), invoice("in_Life1", cus)), events.WebhookStale)
	a = l.get("acc_life")
	if a.EffectivePlan() != "pro" || !a.Billing.GraceUntil.IsZero() {
		t.Fatalf("after paid: plan %q, billing %+v", a.EffectivePlan(), a.Billing)
	}
	if n, err := l.dunning(dun); err != nil || n != 0 {
		t.Fatalf("dunning after payment = %d, %v", n, err)
	}

	// Subscription canceled: fallback plan at once.
	l.mustDeliver(payload("evt_Deleted1", "customer.subscription.deleted", "2023-10-16", l.now.Add(time.Hour),
		subscription("sub_Life1", cus, "canceled", "price_pro", "price_pro_metered")), events.WebhookApplied)
	if a = l.get("acc_life"); a.EffectivePlan() != "free" || a.Billing.SubscriptionStatus != "canceled" {
		t.Fatalf("after deletion: %q %+v", a.EffectivePlan(), a.Billing)
	}

	want := []string{events.TypeAccountCreated, events.TypeBillingCustomerLinked,
		events.TypeBillingWebhookReceived, events.TypeBillingSubscriptionChanged, // checkout completed
		events.TypeBillingWebhookReceived, // stale subscription.created
		events.TypeBillingWebhookReceived, events.TypeBillingPaymentFailed,
		events.TypeBillingWebhookReceived, events.TypeBillingPaymentFailed,
		events.TypeAccountDowngraded,
		events.TypeBillingWebhookReceived, events.TypeBillingPaymentSucceeded,
		events.TypeBillingWebhookReceived, // stale failure
		events.TypeBillingWebhookReceived, events.TypeBillingSubscriptionChanged,
	}
	if got := l.types("acc_life"); len(got) != len(want) {
		t.Fatalf("account stream %v\nwant %v", got, want)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("event %d = %s, want %s", i+1, got[i], want[i])
			}
		}
	}
}

func TestWebhookRejectsBadSignatureAndBody(t *testing.T) {
	t.Parallel()
	l := newLife(t)
	body := payload("evt_Sig1", "invoice.paid", "2023-10-16", l.now, invoice("in_1", "cus_X"))
	before := l.eventCount()

	bad := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: "whsec_wrong"})
	if _, err := l.wh.Handle(context.Background(), body, bad.Header); !errors.Is(err, stripe.ErrWebhookSignature) {
		t.Errorf("wrong secret: %v", err)
	}
	if _, err := l.wh.Handle(context.Background(), body, ""); !errors.Is(err, stripe.ErrWebhookSignature) {
		t.Errorf("no header: %v", err)
	}
	old := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: whSecret, Timestamp: time.Now().Add(-time.Hour)})
	if _, err := l.wh.Handle(context.Background(), body, old.Header); !errors.Is(err, stripe.ErrWebhookSignature) {
		t.Errorf("signature older than the tolerance: %v", err)
	}
	tampered := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: whSecret})
	if _, err := l.wh.Handle(context.Background(), append([]byte(" "), body...), tampered.Header); !errors.Is(err, stripe.ErrWebhookSignature) {
		t.Errorf("tampered body: %v", err)
	}
	for name, b := range map[string][]byte{
		"not json":   []byte(`{"id": "evt_1", `),
		"no id":      payload("", "invoice.paid", "2023-10-16", l.now, invoice("in_1", "cus_X")),
		"odd id":     payload("evt_a/b", "invoice.paid", "2023-10-16", l.now, invoice("in_1", "cus_X")),
		"bad object": []byte(`{"id":"evt_Obj1","object":"event","type":"invoice.paid","created":1,"data":{"object":[1,2]}}`),
	} {
		if _, err := l.deliver(b); !errors.Is(err, stripe.ErrWebhookPayload) {
			t.Errorf("%s: %v, want ErrWebhookPayload", name, err)
		}
	}
	if n := l.eventCount(); n != before {
		t.Errorf("rejected deliveries recorded %d events", n-before)
	}
}

func TestWebhookAcceptsOtherAPIVersionsAndRecordsUnknownTypes(t *testing.T) {
	t.Parallel()
	l := newLife(t)
	ctx := context.Background()
	l.account("acc_v")
	a, err := l.svc.LinkCustomer(ctx, events.Metadata{Actor: "admin"}, "acc_v", "cus_Version1")
	if err != nil {
		t.Fatal(err)
	}
	// stripe-go/v76's ConstructEvent refuses this version; Tollgate reads it.
	body := payload("evt_NewVersion1", "customer.subscription.updated", "2024-06-20", l.now,
		subscription("sub_V1", a.StripeCustomerID, "active", "price_pro"))
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: whSecret})
	if _, err := webhook.ConstructEvent(sp.Payload, sp.Header, whSecret); err == nil {
		t.Fatal("stripe-go accepted a mismatched API version; the premise of this test changed")
	}
	l.mustDeliver(body, events.WebhookApplied)
	if got := l.get("acc_v"); got.EffectivePlan() != "pro" {
		t.Errorf("plan %q after a 2024-06-20 event", got.EffectivePlan())
	}

	// Unknown type and unknown customer: acknowledged and recorded on the
	// event's own stream, once.
	for _, tc := range []struct {
		body    []byte
		id, out string
	}{
		{payload("evt_Unknown1", "customer.tax_id.created", "2023-10-16", l.now, map[string]any{"id": "txi_1", "object": "tax_id", "customer": "cus_Version1"}), "evt_Unknown1", events.WebhookUnhandled},
		{payload("evt_Stranger1", "invoice.paid", "2023-10-16", l.now, invoice("in_9", "cus_Stranger")), "evt_Stranger1", events.WebhookNoAccount},
	} {
		for range 2 {
			l.mustDeliver(tc.body, tc.out)
		}
		evs, err := l.store.Load(ctx, events.StreamStripeEvent+tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("%s: %d events recorded, want 1", tc.id, len(evs))
		}
		d, err := events.Decode(evs[0])
		if err != nil {
			t.Fatal(err)
		}
		if r := d.(events.BillingWebhookReceived); r.Outcome != tc.out || r.StripeEventID != tc.id {
			t.Errorf("recorded %+v", r)
		}
	}
}

func TestWebhookFailureAfterVerificationIsRetriedIdempotently(t *testing.T) {
	t.Parallel()
	l := newLife(t)
	ctx := context.Background()
	l.account("acc_r")
	a, err := l.svc.LinkCustomer(ctx, events.Metadata{Actor: "admin"}, "acc_r", "cus_Retry1")
	if err != nil {
		t.Fatal(err)
	}
	body := payload("evt_Retry1", "invoice.payment_failed", "2023-10-16", l.now, invoice("in_R1", a.StripeCustomerID))
	before := l.eventCount()
	l.store.setFail(true)
	if _, err := l.deliver(body); err == nil || errors.Is(err, stripe.ErrWebhookSignature) || errors.Is(err, stripe.ErrWebhookPayload) {
		t.Fatalf("failure after verification = %v, want a server error", err)
	}
	if l.eventCount() != before {
		t.Fatal("a failed delivery recorded events")
	}
	l.store.setFail(false)
	// Stripe retries, twice concurrently.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := l.deliver(body); err != nil {
				t.Errorf("retry: %v", err)
			}
		})
	}
	wg.Wait()
	if got := l.eventCount() - before; got != 2 {
		t.Errorf("retries recorded %d events, want 2 (receipt and payment_failed)", got)
	}
	if a := l.get("acc_r"); a.Billing.GraceUntil.IsZero() {
		t.Error("grace period not started")
	}
}

// dunning runs a dunning pass once the read models caught up.
func (l *life) dunning(d *stripe.Dunning) (int, error) {
	l.t.Helper()
	ctx := context.Background()
	if err := l.fresh(ctx); err != nil {
		l.t.Fatal(err)
	}
	return d.RunOnce(ctx)
}
