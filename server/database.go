package server

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events/pgstore"
)

// DefaultConnectTimeout bounds a connection attempt when the database URL
// sets no connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// DefaultQueryTimeout bounds each statement of a serving process (see
// queryDeadline); Options.QueryTimeout overrides it.
const DefaultQueryTimeout = 30 * time.Second

// openStore opens what every role stands on: the database pool (its
// migrations applied), the event store and the command service.
func (w *wiring) openStore(ctx context.Context) (err error) {
	cfg := w.cfg
	maxConns := w.opts.MaxDBConns
	if maxConns == 0 {
		maxConns = 20
	}
	w.Pool, err = openDatabase(ctx, cfg.Env.DatabaseURL, maxConns, cmp.Or(w.opts.QueryTimeout, cfg.Env.DatabaseQueryTimeout, DefaultQueryTimeout))
	if err != nil {
		return err
	}
	w.closers = append(w.closers, func() error { w.Pool.Close(); return nil })
	if applied, err := pgstore.Migrate(unboundedQueries(ctx), w.Pool); err != nil {
		return err
	} else if len(applied) > 0 {
		w.logger.Info("migrations applied", "names", applied)
	}
	if w.Store, err = pgstore.New(w.Pool, w.reg, keyindex.Projection{}, records.CustomerLinksInline{}); err != nil {
		return err
	}
	w.svc = commands.NewService(w.Store, func(p string) bool { _, ok := cfg.Plan(p); return ok }, time.Now)
	w.bus = bus.Config{KafkaBrokers: cfg.Env.KafkaBrokers, Pool: w.Pool, Logger: w.logger, ClientID: "tollgate-" + cfg.Env.InstanceID, SQLPollInterval: w.opts.BusPollInterval}
	return nil
}

// OpenDatabase returns a pool on dsn, creating the database first when the
// server does not have it (so `tollgate serve` works on a fresh PostgreSQL).
// Its statements are unbounded (the operator tools run long ones).
func OpenDatabase(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	return openDatabase(ctx, dsn, maxConns, 0)
}

// openDatabase is OpenDatabase with every statement bounded by
// queryTimeout when it is positive.
func openDatabase(ctx context.Context, dsn string, maxConns int32, queryTimeout time.Duration) (*pgxpool.Pool, error) {
	if err := ensureDatabase(ctx, dsn); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A server that accepts TCP but does not answer (paused, or its
		// host hung) must fail a connection attempt, not hold it forever:
		// the request gets 503 database_unavailable instead of hanging.
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if queryTimeout > 0 {
		if cfg.ConnConfig.Tracer == nil {
			cfg.ConnConfig.Tracer = queryDeadline{timeout: queryTimeout}
		}
		// The pool pings a connection idle for over a second before
		// handing it out; unbounded, that ping waits on a hung server.
		cfg.PingTimeout = queryTimeout
		if dial := cfg.ConnConfig.DialFunc; dial != nil {
			cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &boundedCloseConn{Conn: c, wait: closeWait}, nil
			}
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	return pool, nil
}

func ensureDatabase(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	cfg, perr := pgx.ParseConfig(dsn)
	if perr != nil {
		return fmt.Errorf("database url: %w", perr)
	}
	name := cfg.Database
	u, perr := url.Parse(dsn)
	if perr != nil || !strings.HasPrefix(u.Scheme, "postgres") {
		return fmt.Errorf("database %q does not exist; create it (createdb %s): %w", name, name, err)
	}
	u.Path = "/postgres"
	admin, aerr := pgx.Connect(ctx, u.String())
	if aerr != nil {
		return fmt.Errorf("database %q does not exist and the server's postgres database is unreachable: %w", name, aerr)
	}
	defer admin.Close(ctx)
	if _, cerr := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); cerr != nil {
		if errors.As(cerr, &pgErr) && pgErr.Code == "42P04" { // created meanwhile by another role
			return nil
		}
		return fmt.Errorf("create database %q: %w", name, cerr)
	}
	return nil
}

// queryDeadline is a pgx tracer that gives every statement (Exec, Query,
// QueryRow, and so BEGIN and COMMIT) a deadline when its context has none
// sooner. A server that stopped answering without closing its connections
// (paused, its host hung, a network partition) then fails a statement in
// queryTimeout, which frees the connection and answers the request 503
// database_unavailable, instead of holding both until the server returns.
// Statements that must run longer (migrations) run under unboundedQueries.
type queryDeadline struct{ timeout time.Duration }

type (
	queryCancelKey struct{}
	unboundedKey   struct{}
)

// unboundedQueries marks ctx's statements as exempt from queryDeadline.
func unboundedQueries(ctx context.Context) context.Context {
	return context.WithValue(ctx, unboundedKey{}, true)
}

func (q queryDeadline) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if ctx.Value(unboundedKey{}) != nil {
		return ctx
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= q.timeout {
		return ctx
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	return context.WithValue(ctx, queryCancelKey{}, cancel)
}

// TraceQueryEnd releases the deadline's timer (for Query, when its rows
// are closed).
func (q queryDeadline) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if cancel, ok := ctx.Value(queryCancelKey{}).(context.CancelFunc); ok {
		cancel()
	}
}

// closeWait bounds the two waits pgconn makes when it gives up on a
// connection (see boundedCloseConn).
const closeWait = 2 * time.Second

// boundedCloseConn shortens the waits of a connection pgconn abandons
// (after a statement's deadline): it sends a cancel request on a new
// connection and reads until the server closes it, then sends Terminate
// on the old one and drains it, each for up to 15s, and the pool keeps the
// connection's slot until both end. A server that stopped answering (paused,
// hung) then held every slot for 15s, so requests waited although their
// statements had failed. After writing a cancel request or a Terminate,
// the server has nothing more to say but to close: the read deadline is
// brought to closeWait. (Over TLS the messages are not seen and pgconn's
// own bounds apply.)
type boundedCloseConn struct {
	net.Conn
	wait time.Duration
}

func (c *boundedCloseConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil && (isCancelRequest(b) || isTerminate(b)) {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.wait))
	}
	return n, err
}

// isCancelRequest: Int32 length, Int32 80877102, process id, secret key.
func isCancelRequest(b []byte) bool {
	return len(b) >= 16 && binary.BigEndian.Uint32(b[0:4]) == uint32(len(b)) && binary.BigEndian.Uint32(b[4:8]) == 80877102
}

// isTerminate: Byte1('X'), Int32 4.
func isTerminate(b []byte) bool {
	return len(b) == 5 && b[0] == 'X' && binary.BigEndian.Uint32(b[1:5]) == 4
}
