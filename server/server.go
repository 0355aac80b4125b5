// Package server assembles Tollgate's roles (API, worker, projector,
// relay, billing reporter) into a running process. `tollgate serve` runs
// them all; each role can also run alone, the way docker-compose.yml does.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/execution"
	"github.com/tollgate/tollgate/handlers"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota"
)

// Roles selects what a process does.
type Roles struct {
	API       bool
	Worker    bool
	Projector bool
	Relay     bool
	Billing   bool
}

// AllRoles is `tollgate serve`.
func AllRoles() Roles {
	return Roles{API: true, Worker: true, Projector: true, Relay: true, Billing: true}
}

// Options configures a Server.
type Options struct {
	Config *config.Config
	Roles  Roles
	Logger *slog.Logger
	// Getenv resolves providers' api_key_env; os.Getenv when nil.
	Getenv func(string) string
	// ProviderClient is the HTTP client for LLM providers; llm.NewHTTPClient when nil.
	ProviderClient *http.Client
	// Listener, when set, is served instead of listening on Env.HTTPAddr.
	Listener net.Listener
	// MaxDBConns bounds the database pool; 20 when zero. Provider calls
	// hold no connection, so a small pool serves many slow requests.
	MaxDBConns int32
	// WorkerConcurrency bounds the jobs one worker runs at once; 256 when zero.
	WorkerConcurrency int
	// Billing overrides for tests.
	BillingInterval            time.Duration
	BillingAfterStripeAccepted func(recordID string) error
	// BusPollInterval overrides the PostgreSQL bus's poll interval.
	BusPollInterval time.Duration
	// QueryTimeout bounds each database statement of the roles (not the
	// migrations), so a database that stops answering fails requests
	// with 503 instead of holding them; DefaultQueryTimeout when zero.
	QueryTimeout time.Duration
	// OutageLogInterval is how often an unavailable dependency is logged
	// while it stays so; handlers.DefaultOutageLogInterval when zero.
	OutageLogInterval time.Duration
	// HTTP2MaxConcurrentStreams bounds the requests one HTTP/2 (h2c)
	// connection carries at once; DefaultHTTP2MaxConcurrentStreams when zero.
	HTTP2MaxConcurrentStreams int
}

// DefaultHTTP2MaxConcurrentStreams is Options.HTTP2MaxConcurrentStreams'
// default: the project's target of 10,000 slow requests in flight fits in
// one h2c connection. A lower limit does not save resources (HTTP/1.1
// clients may open as many connections), and Go's client, past a
// connection's limit, dials a new connection per waiting request rather
// than sharing one, which brings back a socket per request. Each stream
// still passes authentication and admission control.
const DefaultHTTP2MaxConcurrentStreams = 10_000

// Server is a running Tollgate process.
type Server struct {
	// Addr is the address the HTTP server listens on.
	Addr string
	// AdminToken is the admin token in use (generated when none was configured).
	AdminToken string
	// Pool is the database pool.
	Pool *pgxpool.Pool
	// Store is the event store.
	Store *pgstore.Store

	logger   *slog.Logger
	http     *http.Server
	router   *message.Router
	worker   *handlers.Worker
	api      *handlers.API
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	errs     chan error
	closers  []func() error
	stopOnce sync.Once
	// redisPing checks the quota limiter's Redis; nil without Redis.
	redisPing func(ctx context.Context) error
}

// Start starts the selected roles and returns once they run.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("server: Config is required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// A dependency outage is logged once per interval by every role, not
	// once per request or retry (see handlers.NewOutageLogHandler).
	logger = slog.New(handlers.NewOutageLogHandler(logger.Handler(), opts.OutageLogInterval, nil))
	if cfg.Env.RedisURL != "" {
		// go-redis logs dial failures itself, one line per request while
		// Redis is down: route them through the outage log. Its logger is
		// process-wide, so the last server started owns it.
		redis.SetLogger(redisLogger{logger})
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Server{logger: logger, cancel: cancel, errs: make(chan error, 8)}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	maxConns := opts.MaxDBConns
	if maxConns == 0 {
		maxConns = 20
	}
	s.Pool, err = openDatabase(ctx, cfg.Env.DatabaseURL, maxConns, cmp.Or(opts.QueryTimeout, cfg.Env.DatabaseQueryTimeout, DefaultQueryTimeout))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { s.Pool.Close(); return nil })
	if applied, err := pgstore.Migrate(unboundedQueries(ctx), s.Pool); err != nil {
		return nil, err
	} else if len(applied) > 0 {
		logger.Info("migrations applied", "names", applied)
	}
	if s.Store, err = pgstore.New(s.Pool, reg); err != nil {
		return nil, err
	}
	svc := commands.NewService(s.Store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, time.Now)

	busCfg := bus.Config{KafkaBrokers: cfg.Env.KafkaBrokers, Pool: s.Pool, Logger: logger, ClientID: "tollgate-" + cfg.Env.InstanceID, SQLPollInterval: opts.BusPollInterval}
	var exec *execution.Executor
	var limiter quota.Limiter
	var settle func(context.Context, commands.Completion)
	if opts.Roles.API || opts.Roles.Worker {
		if limiter, err = s.quotaLimiter(ctx, cfg, reg); err != nil {
			return nil, err
		}
		settle = handlers.QuotaSettler(cfg, svc, limiter, logger, time.Now)
		if err := s.watchPlanBudgets(runCtx, cfg, reg, 30*time.Second); err != nil {
			return nil, err
		}
		router, err := llm.NewRouter(cfg, opts.ProviderClient, getenv, logger, llm.WithRegisterer(reg))
		if err != nil {
			return nil, err
		}
		exec, err = execution.New(execution.Config{Service: svc, LLM: router, Streams: router, Models: cfg.Model, Logger: logger, Registry: reg, Lease: cfg.Jobs.Lease.D(),
			Settled: settle, Renewed: handlers.QuotaExtender(limiter, logger, time.Now), ReservationMargin: handlers.ReservationMargin(cfg),
			Transient: pgstore.Transient})
		if err != nil {
			return nil, err
		}
	}

	// The bus: the relay publishes every event, and queued jobs once more
	// on the jobs topic, which the workers consume.
	if opts.Roles.Relay || opts.Roles.Worker {
		pub, err := bus.NewPublisher(busCfg)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, pub.Close)
		if opts.Roles.Relay {
			relay, err := outbox.NewRelay(outbox.RelayConfig{
				Store: s.Store, Publisher: pub, Logger: logger, Registerer: reg,
				Routes: []outbox.Route{{Topic: bus.JobsTopic, Match: bus.IsJob}},
			})
			if err != nil {
				return nil, err
			}
			s.goRun("relay", s.leader(runCtx, "tollgate:relay", relay.Run))
		}
		if opts.Roles.Worker {
			if s.router, err = bus.NewRouter(bus.RouterConfig{DeadLetterPublisher: pub, Logger: logger, Registerer: reg}); err != nil {
				return nil, err
			}
			conc := opts.WorkerConcurrency
			if conc == 0 {
				conc = 256
			}
			s.worker = handlers.NewWorker(runCtx, exec, cfg.Env.InstanceID, conc, logger)
			sub, err := bus.NewSubscriber(busCfg, "tollgate-workers")
			if err != nil {
				return nil, err
			}
			s.router.AddConsumerHandler("worker", bus.JobsTopic, sub, s.worker.Handle)
			s.goRun("bus router", func() error { return s.router.Run(runCtx) })
			select {
			case <-s.router.Running():
			case <-time.After(30 * time.Second):
				return nil, errors.New("bus router did not start within 30s")
			}
			if err := s.startJobs(runCtx, cfg, svc, settle, reg, logger); err != nil {
				return nil, err
			}
		}
	}

	// The projectors follow the event store itself (see projections.Follower).
	if opts.Roles.Projector {
		set, err := projections.NewSet(s.Pool, projections.LiveSchema, logger, reg, ReadModels(cfg)(projections.LiveSchema)...)
		if err != nil {
			return nil, err
		}
		follower, err := projections.NewFollower(projections.FollowerConfig{Set: set, Store: s.Store, Logger: logger})
		if err != nil {
			return nil, err
		}
		s.goRun("projections", s.leader(runCtx, "tollgate:projections", follower.Run))
		go set.WatchLag(runCtx, follower.Lag, 5*time.Second)
	}

	if opts.Roles.Billing {
		if cfg.Env.StripeSecretKey == "" {
			logger.Info("billing reporter off: STRIPE_SECRET_KEY is not set")
		} else {
			rep, err := billing.NewReporter(billing.ReporterConfig{
				Store:               s.Store,
				Due:                 dueRecords(s.Pool, cfg.Billing.ReportDelay.D()),
				Stripe:              billing.NewStripeClient(cfg.Env.StripeSecretKey, cfg.Env.StripeAPIBase, 0),
				EventName:           cfg.Env.StripeMeterEventName,
				Interval:            firstNonZero(opts.BillingInterval, cfg.Billing.ReportInterval.D()),
				RateLimit:           cfg.Billing.StripeRateLimit,
				Logger:              logger,
				Registerer:          reg,
				AfterStripeAccepted: opts.BillingAfterStripeAccepted,
			})
			if err != nil {
				return nil, err
			}
			s.goRun("billing reporter", s.leader(runCtx, "tollgate:billing-reporter", rep.Run))
		}
		dunning, err := billing.NewDunning(billing.DunningConfig{
			Service: svc, Events: s.Pool, FallbackPlan: cfg.Billing.FallbackPlan,
			Interval: cfg.Billing.DunningInterval.D(), Logger: logger, Registerer: reg,
		})
		if err != nil {
			return nil, err
		}
		s.goRun("billing dunning", s.leader(runCtx, "tollgate:billing-dunning", dunning.Run))
	}

	// HTTP: the API role serves the whole API; every role serves ops endpoints.
	ready := s.readyChecks(busCfg)
	var handler http.Handler
	if opts.Roles.API {
		s.AdminToken = cfg.Env.AdminToken
		if s.AdminToken == "" {
			s.AdminToken = generateToken()
			// Printed, not logged: it is a secret, shown once to the operator at the console.
			fmt.Fprintf(os.Stderr, "\nTOLLGATE_ADMIN_TOKEN is not set; this run's admin token is:\n\n    %s\n\n", s.AdminToken)
		}
		bdeps, err := billingDeps(cfg, svc, s.Pool, logger, reg)
		if err != nil {
			return nil, err
		}
		jdeps, err := jobsDeps(cfg, reg)
		if err != nil {
			return nil, err
		}
		api, err := handlers.NewAPI(handlers.APIConfig{
			Config: cfg, Service: svc, Executor: exec, Keys: s.Store, ReadModels: s.Pool,
			AdminToken: s.AdminToken, InstanceID: cfg.Env.InstanceID, Dependencies: ready,
			ResponseDeadline: cfg.Env.ResponseDeadline,
			Logger:           logger, Registry: reg, Gatherer: reg,
			Billing: bdeps,
			Jobs:    jdeps,
			Quota:   handlers.QuotaDeps{Limiter: limiter},
		})
		if err != nil {
			return nil, err
		}
		handler = api.Handler()
		s.api = api
	} else {
		r := mux.NewRouter()
		handlers.OpsRoutes(r, reg, ready)
		handler = r
	}
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Env.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Env.HTTPAddr, err)
		}
	}
	s.Addr = ln.Addr().String()
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// A synchronous completion can take minutes at the provider.
		WriteTimeout:   10 * time.Minute,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		// HTTP/1.1 and unencrypted HTTP/2 (h2c, prior knowledge) on the same
		// port: a client or proxy that speaks h2c multiplexes many slow
		// requests over a few connections (one file descriptor each) instead
		// of one connection per request in flight.
		Protocols: serverProtocols(),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: cmp.Or(opts.HTTP2MaxConcurrentStreams, DefaultHTTP2MaxConcurrentStreams)},
	}
	s.goRun("http", func() error {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	logger.Info("tollgate started", "addr", s.Addr, "roles", fmt.Sprintf("%+v", opts.Roles), "bus", busName(busCfg))
	return s, nil
}

// serverProtocols is HTTP/1.1 plus h2c.
func serverProtocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

func busName(c bus.Config) string {
	if c.Kafka() {
		return "kafka"
	}
	return "postgresql"
}

func firstNonZero(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

func generateToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails on supported platforms
	return "tga_" + hex.EncodeToString(b)
}

// ReadModels returns the projectors of every read model, built on schema.
func ReadModels(cfg *config.Config) func(schema string) []projections.Projector {
	return func(schema string) []projections.Projector {
		return []projections.Projector{
			projections.NewUsageLedger(schema), projections.NewJobs(schema),
			projections.NewBillingRecords(schema, cfg.Billing.Window.D(), cfg.Billing.Unit),
			projections.NewQuotaState(schema),
		}
	}
}

// dueRecords adapts the billing read model to the reporter.
func dueRecords(pool *pgxpool.Pool, delay time.Duration) billing.DueRecords {
	return func(ctx context.Context, now time.Time, limit int) ([]billing.Record, error) {
		recs, err := projections.DueBillingRecords(ctx, pool, projections.LiveSchema, now, delay, limit)
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
}

// leader runs a role that must run once across replicas (relay,
// projector, billing reporter) only while this process holds its lock.
func (s *Server) leader(ctx context.Context, lock string, run func(context.Context) error) func() error {
	return func() error { return pgstore.RunAsLeader(ctx, s.Pool, lock, time.Second, s.logger, run) }
}

func (s *Server) goRun(name string, f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			s.logger.Error("role stopped", "role", name, "error", err)
			select {
			case s.errs <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// Err returns a channel that receives the first error of a role that stopped.
func (s *Server) Err() <-chan error { return s.errs }

// Close stops the roles gracefully: the HTTP server finishes its requests,
// the worker its running jobs, within ctx.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	s.stopOnce.Do(func() {
		if s.http != nil {
			errs = append(errs, s.http.Shutdown(ctx))
		}
		if s.api != nil {
			// Inline completions that outlived their requests record
			// their outcomes before the pool closes.
			errs = append(errs, s.api.Wait(ctx))
		}
		if s.router != nil {
			errs = append(errs, s.router.Close())
		}
		if s.worker != nil {
			done := make(chan struct{})
			go func() { s.worker.Wait(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("worker jobs still running: %w", ctx.Err()))
			}
		}
		s.cancel()
		s.wg.Wait()
		for i := len(s.closers) - 1; i >= 0; i-- {
			errs = append(errs, s.closers[i]())
		}
	})
	return errors.Join(errs...)
}

// billingDeps builds the Stripe endpoints' dependencies: checkout and
// portal need STRIPE_SECRET_KEY, webhooks STRIPE_WEBHOOK_SECRET; without
// them the endpoints answer 503.
func billingDeps(cfg *config.Config, svc *commands.Service, pool *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) (handlers.BillingDeps, error) {
	deps := handlers.BillingDeps{Unit: cfg.Billing.Unit}
	if cfg.Env.StripeSecretKey != "" {
		deps.Checkout = billing.NewCheckout(svc, billing.NewStripeClient(cfg.Env.StripeSecretKey, cfg.Env.StripeAPIBase, 0), cfg, logger)
	}
	if cfg.Env.StripeWebhookSecret != "" {
		wh, err := billing.NewWebhooks(billing.WebhookConfig{Service: svc, Accounts: pool, Config: cfg,
			Secret: cfg.Env.StripeWebhookSecret, Logger: logger, Registerer: reg})
		if err != nil {
			return deps, err
		}
		deps.Webhooks = wh
	}
	return deps, nil
}
