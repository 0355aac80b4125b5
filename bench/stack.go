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

// startBase starts what both bench modes run beside their gateways: it
// creates the bench's database on the server of serverURL and starts the
// fake upstream (latency), registering their ends on c, and makes the
// admin token of the run's Tollgate.
func startBase(ctx context.Context, c *cleanup, serverURL string, keep bool, latency time.Duration, logger *slog.Logger) (dbURL string, up *upstream, adminToken string, err error) {
	dbURL, drop, err := createDatabase(ctx, serverURL, keep, logger)
	if err != nil {
		return "", nil, "", err
	}
	c.add(drop)
	if up, err = startUpstream(latency, logger); err != nil {
		return "", nil, "", err
	}
	c.add(func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return up.close(cctx)
	})
	token, err := randomHex(24)
	if err != nil {
		return "", nil, "", err
	}
	return dbURL, up, "tga_" + token, nil
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
