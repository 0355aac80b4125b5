package handlers

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyCheck is one dependency /readyz reports.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// readyTimeout bounds each check of /readyz (they run at once).
const readyTimeout = 2 * time.Second

// dependencyState is one check's line in /readyz.
type dependencyState struct {
	Status string `json:"status"` // "up" or "down"
	Error  string `json:"error,omitempty"`
	// LatencyMS is how long the check took, in milliseconds.
	LatencyMS int64 `json:"latency_ms"`
}

// OpsRoutes adds /metrics, /healthz and /readyz; every role serves them.
// /readyz runs every check at once, each bounded by readyTimeout, and
// answers 200 when all are up, 503 (with Retry-After) when any is down,
// naming each dependency with its state either way.
func OpsRoutes(r *mux.Router, g prometheus.Gatherer, checks []ReadyCheck) {
	r.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		states := make([]dependencyState, len(checks))
		var wg sync.WaitGroup
		for i, c := range checks {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(req.Context(), readyTimeout)
				defer cancel()
				start := time.Now()
				err := c.Check(ctx)
				states[i] = dependencyState{Status: "up", LatencyMS: time.Since(start).Milliseconds()}
				if err != nil {
					states[i].Status, states[i].Error = "down", err.Error()
				}
			})
		}
		wg.Wait()
		body := struct {
			Status       string                     `json:"status"`
			Dependencies map[string]dependencyState `json:"dependencies"`
		}{Status: "ready", Dependencies: make(map[string]dependencyState, len(checks))}
		status := http.StatusOK
		for i, c := range checks {
			body.Dependencies[c.Name] = states[i]
			if states[i].Status != "up" {
				body.Status, status = "unavailable", http.StatusServiceUnavailable
			}
		}
		if status != http.StatusOK {
			w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfterUnavailable/time.Second)))
		}
		writeJSON(w, status, body)
	}).Methods(http.MethodGet)
}
