package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// RunAsLeader runs fn while this process holds the PostgreSQL advisory
// lock named name, so that of several replicas of a role that must run
// once (the outbox relay, the projector, the billing reporter) exactly one
// works and the others stand by. It waits for the lock (retrying every
// retry), runs fn with a context that ends when ctx does or when the
// lock's connection is lost (then another replica takes over and this one
// waits again), and returns when ctx ends. A lock is held by a connection,
// so one pool connection is reserved while leading.
func RunAsLeader(ctx context.Context, pool *pgxpool.Pool, name string, retry time.Duration, logger *slog.Logger, fn func(context.Context) error) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	for {
		err := leadOnce(ctx, pool, name, retry, logger, fn)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			logger.Error("leader lost its lock or failed; standing by", "lock", name, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// leaderPingTimeout bounds the leader's watch of its lock's connection.
const leaderPingTimeout = 10 * time.Second

func leadOnce(ctx context.Context, pool *pgxpool.Pool, name string, retry time.Duration, logger *slog.Logger, fn func(context.Context) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("leader %s: acquire: %w", name, err)
	}
	defer conn.Release()
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, name).Scan(&got); err != nil {
			return fmt.Errorf("leader %s: lock: %w", name, err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
	logger.Info("leading", "lock", name)
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := make(chan error, 1)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		// The lock lives as long as the connection: watch it.
		t := time.NewTicker(retry)
		defer t.Stop()
		for {
			select {
			case <-leadCtx.Done():
				return
			case <-t.C:
				// Bounded: a hung server must cost the lead, not hold it
				// (a cancelled ping closes the connection, and with it the lock).
				pctx, pcancel := context.WithTimeout(leadCtx, leaderPingTimeout)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil && leadCtx.Err() == nil {
					lost <- fmt.Errorf("leader %s: lock connection: %w", name, err)
					cancel()
					return
				}
			}
		}
	}()
	err = fn(leadCtx)
	cancel()
	<-watching // the connection is ours alone again
	select {
	case l := <-lost:
		return errors.Join(l, err)
	default:
	}
	// Unlock explicitly: the connection goes back to the pool.
	if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, name); uerr != nil {
		conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing drops the lock either way
	}
	return err
}
