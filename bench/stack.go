package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/server"
)

// stackConfig configures what both bench modes run: a database of their
// own, the fake upstream and a complete Tollgate.
type stackConfig struct {
	DatabaseURL     string
	Keep            bool
	UpstreamLatency time.Duration
	KafkaBrokers    []string
	// ProviderTransport is Tollgate's transport to the fake upstream.
	ProviderTransport http.RoundTripper
	// MaxDBConns is Tollgate's database pool size; the server's default when zero.
	MaxDBConns int32
	Logger     *slog.Logger
}

// stack is a running bench setup: the fake upstream, Tollgate on a fresh
// database, and an API key of an account on the bench plan.
type stack struct {
	up          *upstream
	srv         *server.Server
	tollgateURL string
	// accepted counts the connections Tollgate's HTTP server accepted.
	accepted *atomic.Int64
	key      string
	dbURL    string
	cleanup
}

// startStack starts a stack; on error everything started is stopped again.
func startStack(ctx context.Context, cfg stackConfig) (_ *stack, err error) {
	logger := cfg.Logger
	st := &stack{}
	defer func() {
		if err != nil {
			err = errors.Join(err, st.close(ctx))
		}
	}()
	if err := st.createDatabase(ctx, cfg); err != nil {
		return nil, err
	}
	if st.up, err = startUpstream(cfg.UpstreamLatency, logger); err != nil {
		return nil, err
	}
	st.add(func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return st.up.close(cctx)
	})

	adminToken, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	tcfg, err := tollgateConfig(st.up.baseURL, st.dbURL, "tga_"+adminToken, cfg.UpstreamLatency, cfg.KafkaBrokers)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	cl := &countingListener{Listener: ln}
	st.accepted = &cl.accepted
	srv, err := startTollgate(ctx, tcfg, logger, cfg.ProviderTransport, cl, cfg.MaxDBConns)
	if err != nil {
		return nil, err
	}
	st.srv = srv
	st.add(func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := srv.Close(cctx); err != nil {
			return fmt.Errorf("bench: stop Tollgate: %w", err)
		}
		return nil
	})
	st.tollgateURL = "http://" + srv.Addr

	if st.key, err = provision(ctx, newClient(1, 30*time.Second), st.tollgateURL, srv.AdminToken); err != nil {
		return nil, err
	}
	return st, nil
}

// createDatabase makes the bench's own database and registers its drop
// (unless cfg.Keep).
func (st *stack) createDatabase(ctx context.Context, cfg stackConfig) error {
	dbURL, drop, err := createDatabase(ctx, cfg.DatabaseURL, cfg.Keep, cfg.Logger)
	if err != nil {
		return err
	}
	st.dbURL = dbURL
	st.add(drop)
	return nil
}

// createDatabase makes a database tollgate_bench_<random> on the server of
// serverURL and returns its URL and what drops it again (unless keep).
func createDatabase(ctx context.Context, serverURL string, keep bool, logger *slog.Logger) (string, func(context.Context) error, error) {
	dbURL, maintURL, dbName, err := benchDatabase(serverURL)
	if err != nil {
		return "", nil, err
	}
	if err := execMaintenance(ctx, maintURL, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("bench: create database %s: %w", dbName, err)
	}
	logger.Info("bench database created", "database", dbName)
	return dbURL, func(ctx context.Context) error {
		if keep {
			logger.Info("bench database kept", "database", dbName, "url", redact(dbURL))
			return nil
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := execMaintenance(dctx, maintURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("bench: drop database %s: %w", dbName, err)
		}
		return nil
	}, nil
}

// cleanup is what a run has to undo: the functions added, run last first.
type cleanup struct {
	fns []func(context.Context) error
}

func (c *cleanup) add(f func(context.Context) error) { c.fns = append(c.fns, f) }

// close runs the functions added, last first, even when ctx has ended.
func (c *cleanup) close(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for i := len(c.fns) - 1; i >= 0; i-- {
		errs = append(errs, c.fns[i](ctx))
	}
	c.fns = nil
	return errors.Join(errs...)
}

// startTollgate starts Tollgate with every role on cfg, serving ln,
// calling the upstream through transport, with a pool of maxConns (the
// server's default when zero).
func startTollgate(ctx context.Context, cfg *config.Config, logger *slog.Logger, transport http.RoundTripper, ln net.Listener, maxConns int32) (*server.Server, error) {
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	srv, err := server.Start(startCtx, server.Options{
		Config:         cfg,
		Roles:          server.AllRoles(),
		Logger:         logger,
		Getenv:         func(string) string { return "" },
		ProviderClient: &http.Client{Transport: transport},
		Listener:       ln,
		MaxDBConns:     maxConns,
	})
	if err != nil {
		_ = ln.Close() // Start failed before serving it
		return nil, fmt.Errorf("bench: start Tollgate: %w", err)
	}
	return srv, nil
}

// countingListener counts the connections it accepts: with h2c, a few
// connections carry thousands of requests, and the report shows how many.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}
