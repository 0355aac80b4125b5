package handlers

import (
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/events"
)

// BillingDeps is what the Stripe endpoints need. A nil Checkout or
// Webhooks makes its endpoints answer 503 (billing not configured).
type BillingDeps struct {
	Checkout *stripe.Checkout
	Webhooks *stripe.Webhooks
	// Unit is the billing unit reconciliation counts in (config billing.unit).
	Unit string
}

// billingRoutes adds the billing endpoints; root is the unauthenticated
// router (Stripe's webhooks authenticate by signature).
func (a *API) billingRoutes(root, admin, client *mux.Router) {
	client.HandleFunc("/billing/checkout", a.billingCheckout).Methods(http.MethodPost)
	client.HandleFunc("/billing/portal", a.billingPortal).Methods(http.MethodPost)
	root.HandleFunc("/v1/webhooks/stripe", a.stripeWebhook).Methods(http.MethodPost)
	admin.HandleFunc("/billing/reconciliation", a.billingReconciliation).Methods(http.MethodGet)
	admin.HandleFunc("/billing/explain", a.billingExplain).Methods(http.MethodGet)
}

// billingError logs a server-side failure and writes the mapped error.
func (a *API) billingError(w http.ResponseWriter, r *http.Request, what string, err error) {
	ae := toAPIError(err)
	if ae.Status >= 500 {
		a.cfg.Logger.ErrorContext(r.Context(), what, slog.String("correlation_id", correlationID(r.Context())), slog.Any("error", err))
	}
	writeError(w, ae)
}

func (a *API) billingCheckout(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	var body struct {
		Plan string `json:"plan"`
	}
	raw, err := io.ReadAll(r.Body)
	if ae := bodyError(err); ae != nil {
		writeError(w, ae)
		return
	}
	if ae := unmarshalClient(raw, &body); ae != nil {
		writeError(w, ae)
		return
	}
	if body.Plan == "" {
		writeError(w, badRequest("missing_required_parameter", "plan", "You must provide the plan to subscribe to."))
		return
	}
	if ae := checkText("plan", body.Plan); ae != nil {
		writeError(w, ae)
		return
	}
	if a.cfg.Billing.Checkout == nil {
		a.billingError(w, r, "checkout", stripe.ErrBillingNotConfigured)
		return
	}
	cid := correlationID(r.Context())
	md := events.Metadata{AccountID: p.AccountID, CorrelationID: cid, CausationID: cid, Actor: "key:" + p.KeyID}
	s, err := a.cfg.Billing.Checkout.Checkout(r.Context(), md, p.AccountID, body.Plan)
	if err != nil {
		a.billingError(w, r, "checkout", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"object": "billing.checkout_session", "id": s.ID, "url": s.URL, "customer": s.CustomerID})
}

func (a *API) billingPortal(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if a.cfg.Billing.Checkout == nil {
		a.billingError(w, r, "portal", stripe.ErrBillingNotConfigured)
		return
	}
	s, err := a.cfg.Billing.Checkout.Portal(r.Context(), p.AccountID)
	if err != nil {
		a.billingError(w, r, "portal", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"object": "billing.portal_session", "id": s.ID, "url": s.URL, "customer": s.CustomerID})
}

// stripeWebhook answers 200 once the event is recorded (also for a
// redelivery and for types Tollgate does not act on), 400 to a bad
// signature or body (nothing recorded), and 500 when recording failed, so
// that Stripe retries.
func (a *API) stripeWebhook(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Billing.Webhooks == nil {
		a.billingError(w, r, "stripe webhook", stripe.ErrBillingNotConfigured)
		return
	}
	payload, err := io.ReadAll(r.Body)
	if ae := bodyError(err); ae != nil {
		writeError(w, ae)
		return
	}
	res, err := a.cfg.Billing.Webhooks.Handle(r.Context(), payload, r.Header.Get("Stripe-Signature"))
	var fe *stripe.PayloadFieldError
	if errors.As(err, &fe) {
		// A verified event with a field Tollgate cannot store: name it.
		writeError(w, badRequest("invalid_payload", fe.Field, "The Stripe event's %s cannot be recorded: %s.", fe.Field, fe.Problem))
		return
	}
	if err != nil {
		a.billingError(w, r, "stripe webhook", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "id": res.EventID, "type": res.Type, "outcome": res.Outcome, "duplicate": res.Duplicate})
}

func (a *API) billingReconciliation(w http.ResponseWriter, r *http.Request) {
	period := r.URL.Query().Get("period")
	if _, _, err := billing.ParsePeriod(period); err != nil {
		writeError(w, badRequest("invalid_value", "period", "period must be a month, YYYY-MM (e.g. 2026-11)."))
		return
	}
	rec, err := records.Reconcile(r.Context(), a.cfg.ReadModels, a.cfg.Billing.Unit, period)
	if err != nil {
		a.billingError(w, r, "reconciliation", err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (a *API) billingExplain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	period, account := q.Get("period"), q.Get("account")
	if _, _, err := billing.ParsePeriod(period); err != nil {
		writeError(w, badRequest("invalid_value", "period", "period must be a month, YYYY-MM (e.g. 2026-11)."))
		return
	}
	if account == "" {
		writeError(w, badRequest("missing_required_parameter", "account", "You must provide the account."))
		return
	}
	if ae := checkText("account", account); ae != nil {
		writeError(w, ae)
		return
	}
	recs, err := records.Explain(r.Context(), a.cfg.ReadModels, account, period)
	if err != nil {
		a.billingError(w, r, "explain", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"account_id": account, "period": period, "records": recs})
}
