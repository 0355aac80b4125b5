package handlers

import "github.com/gorilla/mux"

// BillingDeps is what the Stripe endpoints need.
type BillingDeps struct{}

// billingRoutes adds the billing endpoints; root is the unauthenticated
// router (Stripe's webhooks authenticate by signature).
func (a *API) billingRoutes(root, admin, client *mux.Router) {}
