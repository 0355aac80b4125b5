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
	closers  []func(context.Context) error // run in reverse order
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
	st.closers = append(st.closers, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return st.up.close(cctx)
	})

	adminToken, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	tcfg, err := tollgateConfig(cfg, st.up.baseURL, st.dbURL, "tga_"+adminToken)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	cl := &countingListener{Listener: ln}
	st.accepted = &cl.accepted
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	srv, err := server.Start(startCtx, server.Options{
		Config:         tcfg,
		Roles:          server.AllRoles(),
		Logger:         logger,
		Getenv:         func(string) string { return "" },
		ProviderClient: &http.Client{Transport: cfg.ProviderTransport},
		Listener:       cl,
		MaxDBConns:     cfg.MaxDBConns,
	})
	cancel()
	if err != nil {
		_ = ln.Close() // Start failed before serving it
		return nil, fmt.Errorf("bench: start Tollgate: %w", err)
	}
	st.srv = srv
	st.closers = append(st.closers, func(ctx context.Context) error {
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
	logger := cfg.Logger
	dbURL, maintURL, dbName, err := benchDatabase(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	st.dbURL = dbURL
	if err := execMaintenance(ctx, maintURL, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return fmt.Errorf("bench: create database %s: %w", dbName, err)
	}
	logger.Info("bench database created", "database", dbName)
	st.closers = append(st.closers, func(ctx context.Context) error {
		if cfg.Keep {
			logger.Info("bench database kept", "database", dbName, "url", redact(dbURL))
			return nil
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := execMaintenance(dctx, maintURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("bench: drop database %s: %w", dbName, err)
		}
		return nil
	})

	return nil
}

// close stops what startStack started, last first, even when ctx has ended.
func (st *stack) close(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for i := len(st.closers) - 1; i >= 0; i-- {
		errs = append(errs, st.closers[i](ctx))
	}
	st.closers = nil
	return errors.Join(errs...)
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
