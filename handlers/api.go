// Package handlers is Tollgate's HTTP API: the OpenAI-compatible client
// endpoints, the admin and billing endpoints and the ops endpoints, one
// file per resource, with domain errors mapped to HTTP in one place
// (errors.go). Only the wiring (server) imports it; the worker's bus
// consumer is bus.Worker.
package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/quota/admission"
	"github.com/tollgate/tollgate/quota/memory"
)

// KeyFinder finds the API key whose secret hashes to a hash.
type KeyFinder interface {
	FindAPIKey(ctx context.Context, keyHash string) (string, error)
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	Config   *config.Config
	Service  *commands.Service
	Executor *execution.Executor
	Keys     KeyFinder
	// ReadModels is the pool the read models (usage, jobs) are queried on.
	ReadModels *pgxpool.Pool
	AdminToken string
	// InstanceID names this process in the claims it makes.
	InstanceID string
	// Ready reports whether the database and the bus are reachable; it is
	// /readyz's one check when Dependencies is empty.
	Ready func(ctx context.Context) error
	// Dependencies are /readyz's checks, each reported by name.
	Dependencies []ReadyCheck
	// Logger receives the API's logs, behind NewOutageLogHandler.
	Logger *slog.Logger
	// OutageLogInterval is how often an unavailable dependency is logged
	// while it stays so; DefaultOutageLogInterval when zero.
	OutageLogInterval time.Duration
	Registry          prometheus.Registerer
	Gatherer          prometheus.Gatherer
	// MaxBodyBytes limits request bodies; default 4 MiB.
	MaxBodyBytes int64
	// KeyCacheTTL bounds how long a revoked key keeps working on this
	// instance; default 1s.
	KeyCacheTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// ResponseDeadline is how long a synchronous request waits for its
	// answer before it gets 202 and its job id; default 55s.
	ResponseDeadline time.Duration
	// Jobs holds the job endpoints' settings (long-poll bounds, metrics).
	Jobs JobsDeps
	// Quota holds what admission control needs (rate limits, budgets).
	Quota QuotaDeps
	// Billing holds what the Stripe endpoints need.
	Billing BillingDeps
}

func (c *APIConfig) setDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.KeyCacheTTL == 0 {
		c.KeyCacheTTL = time.Second
	}
	if c.Quota.Limiter == nil {
		c.Quota.Limiter = memory.New(nil)
	}
	if c.ResponseDeadline == 0 {
		c.ResponseDeadline = 55 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = slog.New(NewOutageLogHandler(c.Logger.Handler(), c.OutageLogInterval, nil))
	if len(c.Dependencies) == 0 && c.Ready != nil {
		c.Dependencies = []ReadyCheck{{Name: "ready", Check: c.Ready}}
	}
	if c.Gatherer == nil {
		c.Gatherer = prometheus.DefaultGatherer
	}
}

// Validate reports a missing dependency.
func (c *APIConfig) Validate() error {
	switch {
	case c.Config == nil, c.Service == nil, c.Executor == nil, c.Keys == nil, c.ReadModels == nil:
		return errors.New("handlers: Config, Service, Executor, Keys and ReadModels are required")
	case len(c.AdminToken) < 16:
		return errors.New("handlers: AdminToken must be at least 16 characters")
	case c.InstanceID == "":
		return errors.New("handlers: InstanceID is required")
	case len(c.Dependencies) == 0:
		return errors.New("handlers: Ready or Dependencies is required")
	}
	return nil
}

// API serves Tollgate's HTTP endpoints.
type API struct {
	cfg      APIConfig
	keys     *keyCache
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	rejected *prometheus.CounterVec
	// deadlines counts synchronous requests answered 202 at the deadline.
	deadlines prometheus.Counter
	// inflight tracks inline executions, which can outlive their request.
	inflight sync.WaitGroup
	// admission runs admission control for chat requests.
	admission *admission.Admitter
	// deep runs a chat request's checks (see deepStacks).
	deep *deepStacks
}

// NewAPI returns the API.
func NewAPI(cfg APIConfig) (*API, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &API{
		cfg:  cfg,
		deep: newDeepStacks(),
		keys: &keyCache{ttl: cfg.KeyCacheTTL, entries: map[string]keyEntry{}},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_http_requests_total",
			Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_http_request_seconds",
			Help:    "HTTP request duration by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"route"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_http_rejections_total",
			Help: "Requests rejected before any work, by reason.",
		}, []string{"reason"}),
		deadlines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_response_deadline_exceeded_total",
			Help: "Synchronous requests answered 202 with their job id because the response deadline passed.",
		}),
	}
	a.admission = admission.New(admission.Config{Config: cfg.Config, Service: cfg.Service, Limiter: cfg.Quota.Limiter,
		Tokens: cfg.Quota.Tokens, Logger: cfg.Logger, Now: cfg.Now})
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{a.requests, a.duration, a.rejected, a.deadlines} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("handlers: register metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Handler returns the API's routes behind its middleware.
func (a *API) Handler() http.Handler {
	r := mux.NewRouter()
	r.Use(recordRoute)
	r.Use(checkPathVars) // input.go: {id} with NUL or non-UTF-8 bytes is a 400
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url", Message: "Unknown request URL."})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed", Message: "Method not allowed on this URL."})
	})
	OpsRoutes(r, a.cfg.Gatherer, a.cfg.Dependencies)

	admin := r.PathPrefix("/v1/admin").Subrouter()
	admin.Use(a.requireAdmin)
	admin.HandleFunc("/accounts", a.createAccount).Methods(http.MethodPost)
	admin.HandleFunc("/accounts/{id}", a.getAccount).Methods(http.MethodGet)
	admin.HandleFunc("/accounts/{id}/keys", a.issueKey).Methods(http.MethodPost)
	admin.HandleFunc("/keys/{id}", a.revokeKey).Methods(http.MethodDelete)

	client := r.PathPrefix("/v1").Subrouter()
	client.Use(a.requireKey)
	client.HandleFunc("/chat/completions", a.chatCompletions).Methods(http.MethodPost)
	client.HandleFunc("/models", a.listModels).Methods(http.MethodGet)
	client.HandleFunc("/jobs", a.listJobs).Methods(http.MethodGet)
	client.HandleFunc("/jobs/{id}", a.getJob).Methods(http.MethodGet)
	client.HandleFunc("/jobs/{id}/events", a.jobEvents).Methods(http.MethodGet)
	client.HandleFunc("/usage", a.usage).Methods(http.MethodGet)

	a.quotaRoutes(admin, client)
	a.billingRoutes(r, admin, client)

	return a.observe(r)
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// observe gives every request a correlation id, a size limit, a log line
// and metrics.
func (a *API) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cid := r.Header.Get("X-Request-Id")
		if cid == "" || len(cid) > 128 {
			cid = "req_" + strings.ReplaceAll(uuid.NewString(), "-", "")
		}
		w.Header().Set("X-Request-Id", cid)
		ri := &requestInfo{correlationID: cid, route: "unmatched"}
		r = r.WithContext(context.WithValue(r.Context(), infoKey, ri))
		r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := ri.route
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		elapsed := time.Since(start)
		a.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		a.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		if route != "/metrics" && route != "/healthz" && route != "/readyz" {
			a.cfg.Logger.LogAttrs(r.Context(), slog.LevelInfo, "http request",
				slog.String("correlation_id", cid), slog.String("method", r.Method), slog.String("route", route),
				slog.Int("status", rec.status), slog.Duration("duration", elapsed))
		}
	})
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (a *API) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(a.cfg.AdminToken)) != 1 {
			a.rejected.WithLabelValues("admin_auth").Inc()
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_admin_token",
				Message: "This endpoint needs the admin token: Authorization: Bearer $TOLLGATE_ADMIN_TOKEN."})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// principal is the authenticated caller of a client endpoint.
type principal struct {
	KeyID     string
	AccountID string
	Plan      string
	// Quota is what admission needs of the key and its account (limits,
	// suspension); it is cached with the rest, so a change reaches every
	// replica within KeyCacheTTL.
	Quota quotaPrincipal
}

func principalFrom(ctx context.Context) principal {
	if i := info(ctx); i != nil {
		return i.principal
	}
	return principal{}
}

func (a *API) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			a.rejected.WithLabelValues("missing_key").Inc()
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "missing_api_key",
				Message: "You didn't provide an API key. Send it as Authorization: Bearer tg_…"})
			return
		}
		p, err := a.authenticate(r.Context(), tok)
		if err != nil {
			if ae := toAPIError(err); ae.Status >= 500 {
				a.cfg.Logger.ErrorContext(r.Context(), "authenticate", slog.String("correlation_id", correlationID(r.Context())), slog.Any("error", err))
				writeError(w, ae)
				return
			}
			a.rejected.WithLabelValues("invalid_key").Inc()
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
				Message: "Incorrect API key provided."})
			return
		}
		if i := info(r.Context()); i != nil {
			i.principal = p
		} else { // not behind observe
			r = r.WithContext(context.WithValue(r.Context(), infoKey, &requestInfo{principal: p}))
		}
		next.ServeHTTP(w, r)
	})
}

// errUnknownKey: no such key, or it was revoked.
var errUnknownKey = errors.New("unknown or revoked api key")

func (a *API) authenticate(ctx context.Context, secret string) (principal, error) {
	if !strings.HasPrefix(secret, keyPrefix) || len(secret) > 200 {
		return principal{}, fmt.Errorf("%w: %w", errUnknownKey, domainerr.ErrNotFound)
	}
	hash := hashKey(secret)
	now := a.cfg.Now()
	if p, err, ok := a.keys.get(hash, now); ok {
		return p, err
	}
	// Concurrent misses of one key share one lookup: without that, a burst
	// (or every request arriving while an expired entry is looked up again)
	// ran three queries each, and 10,000 requests in flight queued 30,000
	// queries on the small pool ahead of their appends.
	return a.keys.load(ctx, hash, func(ctx context.Context) (principal, error) {
		p, err := a.lookupKey(ctx, hash)
		if err != nil && !errors.Is(err, domainerr.ErrNotFound) {
			return principal{}, err // a database error is not cached
		}
		a.keys.put(hash, p, err, now)
		return p, err
	})
}

func (a *API) lookupKey(ctx context.Context, hash string) (principal, error) {
	id, err := a.cfg.Keys.FindAPIKey(ctx, hash)
	if err != nil {
		return principal{}, err
	}
	if id == "" {
		return principal{}, fmt.Errorf("%w: %w", errUnknownKey, domainerr.ErrNotFound)
	}
	k, err := a.cfg.Service.APIKey(ctx, id)
	if err != nil {
		return principal{}, err
	}
	if k.Revoked {
		return principal{}, fmt.Errorf("%w: %w", errUnknownKey, domainerr.ErrNotFound)
	}
	acc, err := a.cfg.Service.Account(ctx, k.AccountID)
	if err != nil {
		return principal{}, err
	}
	return principal{KeyID: k.ID, AccountID: acc.ID, Plan: acc.EffectivePlan(),
		Quota: quotaPrincipal{Account: acc.Limits, Key: k.Limits, Suspended: k.Suspended}}, nil
}

// keyCache keeps authentication off the database for a short while. Its
// TTL is the longest a revoked key keeps working on this instance.
type keyCache struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]keyEntry
	// flights are the lookups in progress, by key hash (see load).
	flights map[string]*keyFlight
}

// keyFlight is one lookup that concurrent misses of a key wait for.
type keyFlight struct {
	done chan struct{}
	p    principal
	err  error
	// waiters counts the callers that joined it (guarded by keyCache.mu).
	waiters int
}

// keyLookupTimeout bounds a shared lookup, which runs without its first
// caller's cancellation (the others wait for it too).
const keyLookupTimeout = 10 * time.Second

// load runs lookup once for all the callers that miss hash at the same
// time; each waits until the lookup ends or its own ctx does.
func (c *keyCache) load(ctx context.Context, hash string, lookup func(context.Context) (principal, error)) (principal, error) {
	c.mu.Lock()
	f, waiting := c.flights[hash]
	if !waiting {
		if c.flights == nil {
			c.flights = map[string]*keyFlight{}
		}
		f = &keyFlight{done: make(chan struct{})}
		c.flights[hash] = f
	} else {
		f.waiters++
	}
	c.mu.Unlock()
	if !waiting {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyLookupTimeout)
		f.p, f.err = lookup(lctx)
		cancel()
		c.mu.Lock()
		delete(c.flights, hash)
		c.mu.Unlock()
		close(f.done)
	}
	select {
	case <-f.done:
		return f.p, f.err
	case <-ctx.Done():
		return principal{}, fmt.Errorf("authenticate: %w", ctx.Err())
	}
}

type keyEntry struct {
	p       principal
	err     error
	expires time.Time
}

// maxKeyCacheEntries bounds the cache against a flood of random keys.
const maxKeyCacheEntries = 100_000

func (c *keyCache) get(hash string, now time.Time) (principal, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if !ok || now.After(e.expires) {
		return principal{}, nil, false
	}
	return e.p, e.err, true
}

func (c *keyCache) put(hash string, p principal, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxKeyCacheEntries {
		clear(c.entries)
	}
	c.entries[hash] = keyEntry{p: p, err: err, expires: now.Add(c.ttl)}
}
