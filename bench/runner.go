package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/projections"
)

// Timeouts of the children and of the catch-up.
const (
	childReady   = 2 * time.Minute  // a gateway starts (Tollgate migrates its database first)
	childGrace   = 30 * time.Second // a child stops gracefully, or is killed
	catchUpLimit = 2 * time.Minute  // Tollgate's relay and projector reach the log's head
	catchUpPoll  = 20 * time.Millisecond
	rebuildLimit = 10 * time.Minute
)

// followers are the checkpoints of Tollgate's followers of the event log:
// the projector's and the relay's (their default names).
func followers() [2]string {
	return [2]string{"projections:" + projections.LiveSchema, "outbox:" + bus.Topic}
}

// runner is one run of the bench: what it started and measures.
type runner struct {
	cfg Config
	log *slog.Logger
	cleanup
	dbURL string
	up    *upstream
	// pool is the bench's own connection to its database, store the event
	// store on it (for the followers' lag), meter the CPU sampler.
	pool  *pgxpool.Pool
	store *pgstore.Store
	meter *cpuMeter
	// The gateways' processes, and the three targets.
	tollgate, reference *child
	direct, ref, tg     *target
	// remote: PostgreSQL's processes could not be read here.
	remote bool
}

// start creates the database, starts the fake upstream and both gateways
// and provisions Tollgate's account and key.
func (r *runner) start(ctx context.Context) error {
	cfg := r.cfg
	var adminToken string
	var err error
	if r.dbURL, r.up, adminToken, err = startBase(ctx, &r.cleanup, cfg.DatabaseURL, cfg.Keep, cfg.UpstreamLatency, r.log); err != nil {
		return err
	}
	addrs, err := r.startGateways(ctx, adminToken)
	if err != nil {
		return err
	}
	if err := r.openDatabase(ctx); err != nil {
		return err
	}
	tollgateURL := "http://" + addrs[1]
	key, err := provision(ctx, newClient(1, 30*time.Second), tollgateURL, adminToken)
	if err != nil {
		return err
	}
	timeout := time.Minute + cfg.UpstreamLatency
	newTarget := func(name, url, auth string) *target {
		t := &target{name: name, client: newClient(cfg.Concurrency, timeout), url: url, auth: auth,
			body: []byte(requestBody), streamBody: []byte(streamRequestBody), logger: r.log}
		r.add(func(context.Context) error { t.client.CloseIdleConnections(); return nil })
		return t
	}
	r.direct = newTarget("direct", r.up.baseURL+"/chat/completions", "Bearer sk-bench")
	r.ref = newTarget("reference", "http://"+addrs[0]+"/v1/chat/completions", "Bearer sk-bench-reference")
	r.tg = newTarget("tollgate", tollgateURL+"/v1/chat/completions", "Bearer "+key)
	return nil
}

// startGateways starts the reference proxy and Tollgate, each in a process
// of its own, and returns their addresses once both serve.
func (r *runner) startGateways(ctx context.Context, adminToken string) ([2]string, error) {
	var addrs [2]string
	cfg := r.cfg
	specs := [2]childSpec{{Role: roleReference}, {Role: roleTollgate, AdminToken: adminToken,
		KafkaBrokers: cfg.KafkaBrokers, CPUProfile: cfg.CPUProfile, BlockProfile: cfg.BlockProfile}}
	apps := [2]string{appReference, appTollgate}
	var children [2]*child
	for i := range specs {
		dbURL, err := withApplication(r.dbURL, apps[i])
		if err != nil {
			return addrs, err
		}
		s := &specs[i]
		s.DatabaseURL, s.UpstreamURL, s.UpstreamLatency, s.Concurrency, s.LogLevel = dbURL, r.up.baseURL, cfg.UpstreamLatency, cfg.Concurrency, cfg.ChildLogLevel
		c, err := startChild(cfg.ChildCommand, *s, cfg.ChildStderr)
		if err != nil {
			return addrs, err
		}
		r.add(func(context.Context) error { return c.stop(childGrace) })
		children[i] = c
	}
	for i, c := range children {
		m, err := c.next(ctx, childReady)
		if err != nil {
			return addrs, err
		}
		if m.Addr == "" {
			return addrs, fmt.Errorf("bench: the %s child sent %+v before its address", c.name, m)
		}
		addrs[i] = m.Addr
	}
	r.reference, r.tollgate = children[0], children[1]
	return addrs, nil
}

// openDatabase opens the bench's own connection to its database.
func (r *runner) openDatabase(ctx context.Context) error {
	u, err := withApplication(r.dbURL, appBench)
	if err != nil {
		return err
	}
	pcfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return fmt.Errorf("bench: database URL: %w", err)
	}
	pcfg.MaxConns = 2
	if r.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("bench: open the database: %w", err)
	}
	r.add(func(context.Context) error { r.pool.Close(); return nil })
	if r.store, err = pgstore.New(r.pool, nil); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	r.meter, err = newCPUMeter(r.pool)
	return err
}

// targets are the three targets in the order of a Phase's results.
func (r *runner) targets() []*target { return []*target{r.direct, r.ref, r.tg} }

// measured is a target with what its CPU is counted by: its gateway's
// process and the application_name of its backends (none for direct).
type measured struct {
	t   *target
	pid int
	app string
	res *Result
}

func (r *runner) measured(ph *Phase) []measured {
	return []measured{{r.direct, 0, "", &ph.Direct}, {r.ref, r.reference.pid(), appReference, &ph.Reference},
		{r.tg, r.tollgate.pid(), appTollgate, &ph.Tollgate}}
}

// sample samples the CPU of both gateways and PostgreSQL.
func (r *runner) sample(ctx context.Context) (snapshot, error) {
	s, err := r.meter.sample(ctx, r.reference.pid(), r.tollgate.pid())
	r.remote = r.remote || s.remote
	return s, err
}

// warmup sends unmeasured requests to every target, streams too, and
// waits for Tollgate's followers to catch up.
func (r *runner) warmup(ctx context.Context) error {
	cfg := r.cfg
	if cfg.Warmup > 0 {
		r.log.Info("bench warmup", "requests", cfg.Warmup, "concurrency", cfg.Concurrency)
		for _, t := range r.targets() {
			if _, err := load(ctx, cfg.Warmup, cfg.Concurrency, t); err != nil {
				return fmt.Errorf("bench: warmup: %w", err)
			}
		}
		if _, _, err := interleaved(ctx, min(cfg.Warmup, 50), r.targets(), (*target).doStream); err != nil {
			return fmt.Errorf("bench: warmup: %w", err)
		}
	}
	if _, err := r.catchUp(ctx); err != nil {
		return err
	}
	// Count only the measured phases' failures in the log's budget.
	for _, t := range r.targets() {
		t.logged.Store(0)
	}
	return nil
}

// light runs the light-load phase (c=1, the targets taking turns),
// streamed or not, measuring the gateways' CPU over it and Tollgate's
// catch-up after it.
func (r *runner) light(ctx context.Context, stream bool) (Phase, error) {
	do := (*target).do
	if stream {
		do = (*target).doStream
	}
	ph := Phase{Concurrency: 1}
	before, err := r.sample(ctx)
	if err != nil {
		return ph, err
	}
	samples, elapsed, err := interleaved(ctx, r.cfg.Requests, r.targets(), do)
	if err != nil {
		return ph, fmt.Errorf("bench: %w", err)
	}
	caughtUp, err := r.catchUp(ctx)
	if err != nil {
		return ph, err
	}
	after, err := r.sample(ctx)
	if err != nil {
		return ph, err
	}
	for i, m := range r.measured(&ph) {
		m.res.Stats = samples[i].stats(elapsed[i])
		if stream {
			first := samples[i].firstStats(elapsed[i])
			m.res.FirstChunk = &first
		}
		m.res.CPU = delta(before, after, m.pid, m.app)
	}
	ph.Tollgate.CPU.CatchUp = caughtUp
	return ph, nil
}

// load runs the load phase: Config.Concurrency requests in flight, one
// target after the other, each measured on its own; Tollgate's CPU
// until its followers caught up.
func (r *runner) load(ctx context.Context) (Phase, error) {
	ph := Phase{Concurrency: r.cfg.Concurrency}
	for _, m := range r.measured(&ph) {
		before, err := r.sample(ctx)
		if err != nil {
			return ph, err
		}
		if m.res.Stats, err = load(ctx, r.cfg.Requests, r.cfg.Concurrency, m.t); err != nil {
			return ph, fmt.Errorf("bench: %w", err)
		}
		var caughtUp time.Duration
		if m.t == r.tg {
			if caughtUp, err = r.catchUp(ctx); err != nil {
				return ph, err
			}
		}
		after, err := r.sample(ctx)
		if err != nil {
			return ph, err
		}
		m.res.CPU = delta(before, after, m.pid, m.app)
		m.res.CPU.CatchUp = caughtUp
	}
	return ph, nil
}

// catchUp waits until Tollgate's relay and projector have followed the
// event log to its head, and returns how long that took.
func (r *runner) catchUp(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	for {
		var lag int64
		for _, name := range followers() {
			cur, err := pgstore.LoadCheckpoint(ctx, r.pool, name)
			if err != nil {
				return 0, fmt.Errorf("bench: %w", err)
			}
			n, err := r.store.Behind(ctx, cur)
			if err != nil {
				return 0, fmt.Errorf("bench: %w", err)
			}
			lag += n
		}
		if lag == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > catchUpLimit {
			return 0, fmt.Errorf("bench: Tollgate's relay and projector are still %d events behind after %s", lag, catchUpLimit)
		}
		select {
		case <-time.After(catchUpPoll):
		case <-ctx.Done():
			return 0, fmt.Errorf("bench: catch-up: %w", ctx.Err())
		}
	}
}

// rebuild stops the gateways (nothing writes while the rebuild reads),
// then runs `tollgate project rebuild` of every event of the run in a
// process of its own and measures it.
func (r *runner) rebuild(ctx context.Context) (Rebuild, error) {
	var res Rebuild
	if err := errors.Join(r.tollgate.stop(childGrace), r.reference.stop(childGrace)); err != nil {
		return res, err
	}
	dbURL, err := withApplication(r.dbURL, appRebuild)
	if err != nil {
		return res, err
	}
	c, err := startChild(r.cfg.ChildCommand, childSpec{Role: roleRebuild, DatabaseURL: dbURL, UpstreamURL: r.up.baseURL,
		LogLevel: r.cfg.ChildLogLevel}, r.cfg.ChildStderr)
	if err != nil {
		return res, err
	}
	r.add(func(context.Context) error { return c.stop(childGrace) })
	if m, err := c.next(ctx, childReady); err != nil || !m.Ready {
		return res, errors.Join(err, fmt.Errorf("bench: the rebuild child did not get ready (%+v)", m))
	}
	before, err := r.meter.sample(ctx, c.pid())
	if err != nil {
		return res, err
	}
	if err := c.send("go"); err != nil {
		return res, err
	}
	m, err := c.next(ctx, rebuildLimit)
	if err != nil || m.Rebuilt == nil {
		return res, errors.Join(err, fmt.Errorf("bench: the rebuild child sent %+v", m))
	}
	after, err := r.meter.sample(ctx, c.pid())
	if err != nil {
		return res, err
	}
	r.remote = r.remote || before.remote || after.remote
	res.Events, res.Elapsed = m.Rebuilt.Events, m.Rebuilt.Elapsed
	if res.Elapsed > 0 {
		res.EventsPerSecond = float64(res.Events) / res.Elapsed.Seconds()
	}
	res.CPU = delta(before, after, c.pid(), appRebuild)
	if m, err = c.next(ctx, rebuildLimit); err != nil || !m.Compared {
		return res, errors.Join(err, fmt.Errorf("bench: the rebuild child sent %+v", m))
	}
	res.Equal, res.Diffs = len(m.Diffs) == 0, m.Diffs
	return res, c.stop(childGrace)
}
