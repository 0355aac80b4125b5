package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/server"
)

func migrate(ctx context.Context, stdout, stderr io.Writer) error {
	_, pool, err := openDatabase(ctx, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := pgstore.Migrate(ctx, pool)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "database is up to date")
	}
	for _, name := range applied {
		fmt.Fprintln(stdout, "applied", name)
	}
	return nil
}

func rebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate project rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	schema := fs.String("schema", "rebuild", "PostgreSQL schema to rebuild the read models in (beside the live ones in public)")
	batch := fs.Int("batch", 5000, "events per transaction")
	compare := fs.Bool("compare", true, "compare the rebuilt read models with the live ones; exit 1 when they differ")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, pool, err := openDatabase(ctx, 4)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	defer pool.Close()
	store, err := pgstore.New(pool, nil)
	if err != nil {
		return err
	}
	stats, err := projections.Rebuild(ctx, pool, store, *schema, *batch, server.ReadModels(cfg), logger)
	if err != nil {
		return err
	}
	rate := float64(stats.Events) / stats.Elapsed.Seconds()
	fmt.Fprintf(stdout, "rebuilt %d events into schema %s in %s (%.0f events/s)\n", stats.Events, *schema, stats.Elapsed.Round(time.Millisecond), rate)
	if !*compare {
		return nil
	}
	diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, *schema)
	if err != nil {
		return err
	}
	if len(diffs) == 0 {
		fmt.Fprintln(stdout, "rebuild equals the live read models")
		return nil
	}
	for _, d := range diffs {
		fmt.Fprintln(stdout, d)
	}
	fmt.Fprintln(stdout, "rebuild differs from the live read models (the live ones may lag behind the log: compare again once the projector caught up)")
	return exitCode(1)
}

func exportEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tollgate events export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.Int64("from-position", 0, "export the events after this global position (0 = from the beginning)")
	since := fs.String("since", "", "only events that occurred at or after this time (RFC 3339 or YYYY-MM-DD)")
	until := fs.String("until", "", "only events that occurred before this time (RFC 3339 or YYYY-MM-DD)")
	types := fs.String("type", "", "only these event types, comma separated (e.g. completion.succeeded,completion.failed)")
	account := fs.String("account", "", "only this account's events (acc_…)")
	limit := fs.Int64("limit", 0, "stop after this many events (0 = all)")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for transactions still appending events before failing (every event committed before the export started is printed, or it exits 1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var f pgstore.Filter
	var err error
	if f.Since, err = parseFlagTime(*since); err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	if f.Until, err = parseFlagTime(*until); err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	if *types != "" {
		for _, t := range strings.Split(*types, ",") {
			f.Types = append(f.Types, strings.TrimSpace(t))
		}
	}
	f.AccountID = *account
	_, pool, err := openDatabase(ctx, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := pgstore.New(pool, nil)
	if err != nil {
		return err
	}
	cur, err := store.CursorAt(ctx, *from)
	if err != nil {
		return err
	}
	return export(ctx, store, pgstore.CatchUpConfig{From: cur, Filter: f, Wait: *wait}, *limit, stdout)
}

// export writes the events after cfg.From that match cfg.Filter as JSON
// lines, in the store's global order: every event committed before it
// started, or an error saying which transactions it waited for.
func export(ctx context.Context, store *pgstore.Store, cfg pgstore.CatchUpConfig, limit int64, stdout io.Writer) error {
	w := bufio.NewWriterSize(stdout, 64<<10)
	enc := json.NewEncoder(w)
	var n int64
	errLimit := errors.New("limit reached")
	_, err := store.CatchUp(ctx, cfg, func(evs []events.Envelope, _ pgstore.Cursor) error {
		for _, e := range evs {
			if limit > 0 && n >= limit {
				return errLimit
			}
			if err := enc.Encode(e); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if flushErr := w.Flush(); err == nil || errors.Is(err, errLimit) {
		return flushErr
	}
	return fmt.Errorf("events export: %d events written, then: %w", n, err)
}

func parseFlagTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

// openDatabase loads the configuration and opens a pool of at most conns
// connections to its database, for the tools that read or migrate it.
func openDatabase(ctx context.Context, conns int32) (*config.Config, *pgxpool.Pool, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	pool, err := server.OpenDatabase(ctx, cfg.Env.DatabaseURL, conns)
	if err != nil {
		return nil, nil, err
	}
	return cfg, pool, nil
}
