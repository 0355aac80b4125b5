package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// Defaults of SlowConfig: the project's performance target, 10,000
// concurrent synchronous requests whose provider takes 10 s each.
const (
	DefaultSlowRequests = 10_000
	DefaultSlowLatency  = 10 * time.Second
)

// SlowConfig configures RunSlow.
type SlowConfig struct {
	// DatabaseURL is a PostgreSQL server URL, as in Config.
	DatabaseURL string
	// Keep keeps the bench's database for inspection.
	Keep bool
	// Requests is how many synchronous chat completions are sent at once,
	// DefaultSlowRequests when zero.
	Requests int
	// UpstreamLatency is the fake provider's think time, DefaultSlowLatency when zero.
	UpstreamLatency time.Duration
	// MaxDBConns is Tollgate's database pool size; the server's default (20) when zero.
	MaxDBConns int32
	// ChildCommand, ChildStderr and ChildLogLevel are as in Config:
	// Tollgate runs in a process of its own.
	ChildCommand  []string
	ChildStderr   io.Writer
	ChildLogLevel string
	// HeapProfile, when set, is where Tollgate's process writes a heap
	// profile while every request through it is in flight; CPUProfile and
	// BlockProfile, as in Config, profile Tollgate's process.
	HeapProfile, CPUProfile, BlockProfile string
	// GoMemLimit, when set, is the GOMEMLIMIT of Tollgate's process (Go's
	// soft memory limit, e.g. "550MiB"); unset, it has the bench's
	// environment's.
	GoMemLimit string
	// Logger receives progress and failures; discarded when nil.
	Logger *slog.Logger
}

func (cfg SlowConfig) withDefaults() SlowConfig {
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultSlowRequests
	}
	if cfg.UpstreamLatency <= 0 {
		cfg.UpstreamLatency = DefaultSlowLatency
	}
	if cfg.ChildLogLevel == "" {
		cfg.ChildLogLevel = "warn"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// SlowPhase is one target's figures in the slow mode.
type SlowPhase struct {
	// Requests counts the requests sent, Succeeded those answered HTTP 200.
	Requests, Succeeded int
	// Errors counts the failed requests by kind (e.g. "http_502",
	// "client_timeout", "accepted_202": answered with a job at the response deadline).
	Errors map[string]int
	// Elapsed is the wall time from the first request sent to the last answer.
	Elapsed time.Duration
	// P50, P99 and Max are latencies of the successful requests (nearest rank).
	P50, P99, Max time.Duration
	// UpstreamPeak is the most requests the fake upstream held at once.
	UpstreamPeak int64
	// Connections is the number of TCP connections the target accepted
	// from the bench client; UpstreamConnections those the upstream accepted.
	Connections, UpstreamConnections int64
	// Process is the peaks of the target's process: in the direct phase
	// the bench's own (client and upstream), in the Tollgate phase
	// Tollgate's, which runs in a process of its own.
	Process Peaks
	// Bench is the peaks of the bench's process (client and upstream).
	Bench Peaks
}

// DBPool is what Tollgate's database pool did during the Tollgate phase.
type DBPool struct {
	// MaxConns is the pool's size; PeakAcquired the most connections in
	// use at once (sampled), PeakTotal the most open at once.
	MaxConns, PeakAcquired, PeakTotal int32
	// Acquires counts acquisitions during the phase, Waited those that
	// found no idle connection, AcquireWait their summed wait.
	Acquires, Waited int64
	AcquireWait      time.Duration
}

// SlowReport is the result of RunSlow.
type SlowReport struct {
	// Config is the run's configuration, defaults applied (Logger dropped).
	Config SlowConfig
	// Direct is the bench client calling the fake upstream itself;
	// Tollgate the same requests through Tollgate.
	Direct, Tollgate SlowPhase
	// Pool is Tollgate's database pool in the Tollgate phase.
	Pool DBPool
	// Runtime is the Go memory settings of Tollgate's process.
	Runtime GoRuntime
	// Requested and Recorded count the completion.requested and
	// completion.succeeded events in the event store after the run: every
	// request must be durably recorded, so Recorded must equal
	// Tollgate.Succeeded.
	Requested, Recorded int64
}

// Failed reports whether the run missed its target: a request failed or
// a success was not recorded.
func (r SlowReport) Failed() error {
	var errs []error
	for _, p := range []struct {
		name string
		ph   SlowPhase
	}{{"direct", r.Direct}, {"tollgate", r.Tollgate}} {
		if p.ph.Succeeded != p.ph.Requests {
			errs = append(errs, fmt.Errorf("%s: %d of %d requests failed", p.name, p.ph.Requests-p.ph.Succeeded, p.ph.Requests))
		}
	}
	if r.Recorded != int64(r.Tollgate.Succeeded) {
		errs = append(errs, fmt.Errorf("%d successes answered but %d completion.succeeded events recorded", r.Tollgate.Succeeded, r.Recorded))
	}
	return errors.Join(errs...)
}

// RunSlow starts the fake upstream in this process and Tollgate in a
// process of its own (cfg.ChildCommand), then sends cfg.Requests
// synchronous chat completions at once, first straight to the upstream,
// then through Tollgate, and reports what it took; Tollgate's process
// measures its own peaks and pool. Clients, Tollgate and the upstream
// speak h2c to each other, so the requests share a few connections (the
// open-files limit would not allow a socket per request on each hop).
// Failed requests are counted, not returned as an error.
func RunSlow(ctx context.Context, cfg SlowConfig) (_ SlowReport, err error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.DatabaseURL == "":
		return SlowReport{}, errors.New("bench: DatabaseURL is required")
	case len(cfg.ChildCommand) == 0:
		return SlowReport{}, errors.New("bench: ChildCommand is required (Tollgate runs in a process of its own)")
	}
	rep := SlowReport{Config: cfg}
	rep.Config.Logger = nil
	r := &slowRunner{cfg: cfg, log: cfg.Logger}
	defer func() { err = errors.Join(err, r.close(ctx)) }()
	if err := r.start(ctx); err != nil {
		return SlowReport{}, err
	}
	logger := cfg.Logger
	logger.Info("bench slow: direct", "requests", cfg.Requests, "upstream_latency", cfg.UpstreamLatency)
	upConns := r.up.accepted.Load()
	if rep.Direct, err = slowPhase(ctx, cfg.Requests, r.direct, r.up, nil); err != nil {
		return SlowReport{}, err
	}
	rep.Direct.Process = rep.Direct.Bench
	rep.Direct.Connections = r.up.accepted.Load() - upConns
	rep.Direct.UpstreamConnections = rep.Direct.Connections

	logger.Info("bench slow: tollgate", "requests", cfg.Requests, "upstream_latency", cfg.UpstreamLatency)
	if rep.Tollgate, rep.Pool, rep.Runtime, err = r.tollgatePhase(ctx); err != nil {
		return SlowReport{}, err
	}
	if rep.Requested, rep.Recorded, err = countRecorded(ctx, r.dbURL); err != nil {
		return SlowReport{}, err
	}
	return rep, nil
}

// slowRunner is one run of the slow mode: what it started.
type slowRunner struct {
	cfg SlowConfig
	log *slog.Logger
	cleanup
	dbURL         string
	up            *upstream
	tollgate      *child
	direct, viaTG *target
}

// start creates the database, starts the fake upstream and Tollgate's
// process and provisions Tollgate's account and key.
func (r *slowRunner) start(ctx context.Context) error {
	cfg := r.cfg
	var adminToken string
	var err error
	if r.dbURL, r.up, adminToken, err = startBase(ctx, &r.cleanup, cfg.DatabaseURL, cfg.Keep, cfg.UpstreamLatency, r.log); err != nil {
		return err
	}
	tgURL, err := withApplication(r.dbURL, appTollgate)
	if err != nil {
		return err
	}
	spec := childSpec{Role: roleSlowTollgate, DatabaseURL: tgURL, UpstreamURL: r.up.baseURL, UpstreamLatency: cfg.UpstreamLatency,
		AdminToken: adminToken, LogLevel: cfg.ChildLogLevel, MaxDBConns: cfg.MaxDBConns,
		HeapProfile: cfg.HeapProfile, CPUProfile: cfg.CPUProfile, BlockProfile: cfg.BlockProfile, GoMemLimit: cfg.GoMemLimit}
	if r.tollgate, err = startChild(cfg.ChildCommand, spec, cfg.ChildStderr); err != nil {
		return err
	}
	r.add(func(context.Context) error { return r.tollgate.stop(childGrace) })
	m, err := r.tollgate.next(ctx, childReady)
	if err != nil {
		return err
	}
	if m.Addr == "" {
		return fmt.Errorf("bench: the tollgate child sent %+v before its address", m)
	}
	tollgateURL := "http://" + m.Addr
	key, err := provision(ctx, newClient(1, 30*time.Second), tollgateURL, spec.AdminToken)
	if err != nil {
		return err
	}
	timeout := slowTimeout(cfg.UpstreamLatency)
	newTarget := func(name, url, auth string) *target {
		t := &target{name: name, client: &http.Client{Transport: newH2CTransport(timeout), Timeout: timeout},
			url: url, auth: auth, body: []byte(requestBody), logger: r.log}
		r.add(func(context.Context) error { t.client.CloseIdleConnections(); return nil })
		return t
	}
	r.direct = newTarget("direct", r.up.baseURL+"/chat/completions", "Bearer sk-bench")
	r.viaTG = newTarget("tollgate", tollgateURL+"/v1/chat/completions", "Bearer "+key)
	return nil
}

// tollgatePhase runs the Tollgate phase, Tollgate's process measuring
// itself from before its connection to the upstream opens (as the
// client's, it is opened first: a deployment's is warm) to the last answer.
func (r *slowRunner) tollgatePhase(ctx context.Context) (SlowPhase, DBPool, GoRuntime, error) {
	upConns := r.up.accepted.Load()
	if err := r.tollgate.send(slowStart); err != nil {
		return SlowPhase{}, DBPool{}, GoRuntime{}, err
	}
	if m, err := r.tollgate.next(ctx, time.Minute); err != nil || !m.Started {
		return SlowPhase{}, DBPool{}, GoRuntime{}, errors.Join(err, fmt.Errorf("bench: the tollgate child answered %+v to %s", m, slowStart))
	}
	var onSample func()
	if r.cfg.HeapProfile != "" {
		var asked atomic.Bool
		n := int64(r.cfg.Requests)
		onSample = func() {
			if r.up.peak.Load() >= n && !asked.Swap(true) {
				if err := r.tollgate.send(slowHeap); err != nil {
					r.log.Error("bench: heap profile", "error", err)
				}
			}
		}
	}
	ph, err := slowPhase(ctx, r.cfg.Requests, r.viaTG, r.up, onSample)
	if err != nil {
		return SlowPhase{}, DBPool{}, GoRuntime{}, err
	}
	ph.UpstreamConnections = r.up.accepted.Load() - upConns
	if err := r.tollgate.send(slowStop); err != nil {
		return SlowPhase{}, DBPool{}, GoRuntime{}, err
	}
	m, err := r.tollgate.next(ctx, time.Minute)
	if err != nil || m.Slow == nil {
		return SlowPhase{}, DBPool{}, GoRuntime{}, errors.Join(err, fmt.Errorf("bench: the tollgate child answered %+v to %s", m, slowStop))
	}
	ph.Process, ph.Connections = m.Slow.Peaks, m.Slow.Accepted
	return ph, m.Slow.Pool, m.Slow.Runtime, nil
}
