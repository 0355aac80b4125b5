package handlers

import "github.com/gorilla/mux"

// QuotaDeps is what admission control needs.
type QuotaDeps struct{}

// quotaRoutes adds the quota endpoints.
func (a *API) quotaRoutes(admin, client *mux.Router) {}
