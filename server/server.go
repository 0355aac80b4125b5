// Package server assembles Tollgate's roles (API, worker, projector,
// relay, billing reporter) into a running process. `tollgate serve` runs
// them all; each role can also run alone, the way docker-compose.yml does.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/handlers"
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
	worker   *bus.Worker
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
	if opts.Config == nil {
		return nil, errors.New("server: Config is required")
	}
	w := newWiring(ctx, opts)
	defer func() {
		if err != nil {
			w.Close(context.Background())
		}
	}()
	if err := w.openStore(ctx); err != nil {
		return nil, err
	}
	roles := opts.Roles
	if roles.API || roles.Worker {
		if err := w.startCompletions(ctx); err != nil {
			return nil, err
		}
	}
	// The bus: the relay publishes every event, and queued jobs once more
	// on the jobs topic, which the workers consume.
	if roles.Relay || roles.Worker {
		if err := w.openPublisher(); err != nil {
			return nil, err
		}
	}
	for _, role := range []struct {
		on    bool
		start func() error
	}{
		{roles.Relay, w.startRelay},
		{roles.Worker, w.startWorker},
		{roles.Projector, w.startProjector},
		{roles.Billing, w.startBilling},
	} {
		if !role.on {
			continue
		}
		if err := role.start(); err != nil {
			return nil, err
		}
	}
	// HTTP: the API role serves the whole API; every role serves ops endpoints.
	handler, err := w.httpHandler()
	if err != nil {
		return nil, err
	}
	if err := w.serveHTTP(handler); err != nil {
		return nil, err
	}
	w.logger.Info("tollgate started", "addr", w.Addr, "roles", fmt.Sprintf("%+v", roles), "bus", busName(w.bus))
	return w.Server, nil
}

// wiring is what the roles share while they start: Start builds it once
// and each role's start function reads it and adds its part.
type wiring struct {
	*Server
	opts   Options
	cfg    *config.Config
	getenv func(string) string
	reg    *prometheus.Registry
	// run is the roles' lifetime, ended by Close.
	run context.Context
	svc *commands.Service
	bus bus.Config
	// On the API and worker roles (startCompletions):
	exec    *execution.Executor
	limiter quota.Limiter
	settle  func(context.Context, completion.Completion)
	// On the relay and worker roles (openPublisher).
	pub message.Publisher
}

// newWiring sets up what every role uses: the logger, the metrics
// registry and the roles' context.
func newWiring(ctx context.Context, opts Options) *wiring {
	cfg := opts.Config
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &wiring{
		Server: &Server{logger: logger, cancel: cancel, errs: make(chan error, 8)},
		opts:   opts, cfg: cfg, getenv: getenv, reg: reg, run: runCtx,
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
