package handlers

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"
)

type ctxKey int

// infoKey is the context key of a request's *requestInfo.
const infoKey ctxKey = 0

// requestInfo is what the middleware learns of a request, under one
// context key: one value and one copy of the request (WithContext copies
// it) for them all, not one per item, as thousands of slow requests keep
// theirs for as long as they wait.
type requestInfo struct {
	correlationID string
	// route is the matched route's template (see recordRoute).
	route string
	// principal is the authenticated caller of a client endpoint (see requireKey).
	principal principal
}

// info returns the request's information (nil outside observe).
func info(ctx context.Context) *requestInfo {
	i, _ := ctx.Value(infoKey).(*requestInfo)
	return i
}

// recordRoute is router middleware: it runs once a route matched, and
// records its template for observe (the router matches on a copy of the
// request, so it comes back through requestInfo).
func recordRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := info(r.Context()); i != nil {
			if cur := mux.CurrentRoute(r); cur != nil {
				if t, err := cur.GetPathTemplate(); err == nil {
					i.route = t
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// correlationID returns the request's correlation id.
func correlationID(ctx context.Context) string {
	if i := info(ctx); i != nil {
		return i.correlationID
	}
	return ""
}
