package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/billing/stripe"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/handlers"
)

// httpHandler is what the HTTP server serves: the whole API on the API
// role (startAPI), the ops endpoints (metrics, health) on every other.
func (w *wiring) httpHandler() (http.Handler, error) {
	ready := w.readyChecks(w.bus)
	if w.opts.Roles.API {
		return w.startAPI(ready)
	}
	r := mux.NewRouter()
	handlers.OpsRoutes(r, w.reg, ready)
	return r, nil
}

// startAPI builds the API role: the OpenAI-compatible client API, the
// admin API, the Stripe endpoints and the ops endpoints.
func (w *wiring) startAPI(ready []handlers.ReadyCheck) (http.Handler, error) {
	cfg := w.cfg
	w.AdminToken = cfg.Env.AdminToken
	if w.AdminToken == "" {
		w.AdminToken = generateToken()
		// Printed, not logged: it is a secret, shown once to the operator at the console.
		fmt.Fprintf(os.Stderr, "\nTOLLGATE_ADMIN_TOKEN is not set; this run's admin token is:\n\n    %s\n\n", w.AdminToken)
	}
	bdeps, err := billingDeps(cfg, w.svc, w.Store, w.logger, w.reg)
	if err != nil {
		return nil, err
	}
	jdeps, err := jobsDeps(cfg, w.reg)
	if err != nil {
		return nil, err
	}
	api, err := handlers.NewAPI(handlers.APIConfig{
		Config: cfg, Service: w.svc, Executor: w.exec, Keys: keyindex.New(w.Pool), ReadModels: w.Pool,
		AdminToken: w.AdminToken, InstanceID: cfg.Env.InstanceID, Dependencies: ready,
		ResponseDeadline: cfg.Env.ResponseDeadline,
		Logger:           w.logger, Registry: w.reg, Gatherer: w.reg,
		Billing: bdeps,
		Jobs:    jdeps,
		Quota:   handlers.QuotaDeps{Limiter: w.limiter},
	})
	if err != nil {
		return nil, err
	}
	w.api = api
	return api.Handler(), nil
}

func generateToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails on supported platforms
	return "tga_" + hex.EncodeToString(b)
}

// billingDeps builds the Stripe endpoints' dependencies: checkout and
// portal need STRIPE_SECRET_KEY, webhooks STRIPE_WEBHOOK_SECRET; without
// them the endpoints answer 503.
func billingDeps(cfg *config.Config, svc *commands.Service, store *pgstore.Store, logger *slog.Logger, reg prometheus.Registerer) (handlers.BillingDeps, error) {
	deps := handlers.BillingDeps{Unit: cfg.Billing.Unit}
	if cfg.Env.StripeSecretKey != "" {
		deps.Checkout = stripe.NewCheckout(svc, stripe.NewStripeClient(cfg.Env.StripeSecretKey, cfg.Env.StripeAPIBase, 0), cfg, logger)
	}
	if cfg.Env.StripeWebhookSecret != "" {
		wh, err := stripe.NewWebhooks(stripe.WebhookConfig{Service: svc, Accounts: liveCustomerLinks(store), Config: cfg,
			Secret: cfg.Env.StripeWebhookSecret, Logger: logger, Registerer: reg})
		if err != nil {
			return deps, err
		}
		deps.Webhooks = wh
	}
	return deps, nil
}

// liveCustomerLinks answers the webhooks' customer lookups from the live
// read model, which the store keeps inline (records.CustomerLinksInline).
func liveCustomerLinks(store *pgstore.Store) records.CustomerLinks {
	return records.CustomerLinks{Q: store.Pool()}
}
