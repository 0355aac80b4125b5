// Package bench measures Tollgate under load against a built-in fake
// upstream, side by side in one run with calling the upstream directly and
// with a naive reference proxy (see reference.go): throughput, latency,
// the latency added over direct calls, and the CPU each gateway and its
// PostgreSQL backends spend per request.
//
// Run creates a database of its own, starts the fake OpenAI-compatible
// provider in this process (beside the bench client) and each gateway in a
// process of its own (Config.ChildCommand), so that /proc tells each
// gateway's CPU apart: the reference proxy, and Tollgate with every role.
// It then runs the phases: light load (one request at a time, the three
// targets taking turns so that all see the same machine), load
// (Config.Concurrency at once, each target in turn), streaming (light
// load, "stream": true: time to the first event and to the end), and a
// rebuild of the read models from every event the run recorded, the way
// `tollgate project rebuild` does it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Defaults of Config.
const (
	DefaultRequests    = 2000
	DefaultConcurrency = 32
	DefaultWarmup      = 200
)

// Names the bench gives to what it configures in Tollgate.
const (
	// Model is the client-facing model the bench calls.
	Model = "bench-model"
	// Provider is the name of the fake upstream in Tollgate's configuration.
	Provider = "bench-upstream"
	// Plan is the plan of the bench's account: no rate limits, no budgets.
	Plan = "bench"
)

// Config configures a run.
type Config struct {
	// DatabaseURL is a PostgreSQL server URL (postgres://…). The bench
	// creates its own database tollgate_bench_<random> on that server and
	// drops it at the end unless Keep; the URL's database name is not used.
	// PostgreSQL's CPU is measured when it runs on this machine.
	DatabaseURL string `json:"-"`
	// Keep keeps the bench's database for inspection.
	Keep bool `json:"keep"`
	// Requests is the number of requests per phase and target, DefaultRequests when zero.
	Requests int `json:"requests"`
	// Concurrency is the number of requests in flight in the load phase, DefaultConcurrency when zero.
	Concurrency int `json:"concurrency"`
	// Warmup is the number of unmeasured requests sent to each target first,
	// DefaultWarmup when zero; negative means none.
	Warmup int `json:"warmup"`
	// UpstreamLatency is the fake provider's think time per request (0 = answer at once).
	UpstreamLatency time.Duration `json:"upstream_latency_ns"`
	// KafkaBrokers, when set, runs Tollgate with the Kafka bus instead of
	// PostgreSQL. Use a dedicated Kafka: the bench publishes to Tollgate's topic.
	KafkaBrokers []string `json:"kafka_brokers,omitempty"`
	// ChildCommand is the command line of a child process: the gateways
	// and the rebuild each run in one. The bench puts the child's spec in
	// the environment variable ChildEnv; the command must pass it to
	// RunChild. `tollgate bench` re-executes its own binary; tests run
	// their test binary, whose TestMain does it.
	ChildCommand []string `json:"-"`
	// ChildStderr receives the children's logs; when nil, only their last
	// lines are kept, for the errors that say why a child failed.
	ChildStderr io.Writer `json:"-"`
	// ChildLogLevel is the children's log level (debug, info, warn, error); warn when empty.
	ChildLogLevel string `json:"-"`
	// CPUProfile and BlockProfile, when set, are files Tollgate's process
	// writes its CPU profile and its profile of waits to.
	CPUProfile   string `json:"-"`
	BlockProfile string `json:"-"`
	// Logger receives progress and failures; discarded when nil.
	Logger *slog.Logger `json:"-"`
}

// Stats summarizes one phase against one target. Percentiles are over the
// successful requests.
type Stats struct {
	// Requests counts the requests sent, Errors those that failed (not
	// HTTP 200, or an answer cut short).
	Requests int `json:"requests"`
	Errors   int `json:"errors"`
	// Elapsed is the phase's wall time under load; in the light-load
	// phases, where the targets take turns, the sum of this target's latencies.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Throughput is Requests per second of Elapsed.
	Throughput float64 `json:"requests_per_second"`
	// P50, P90, P99 and Max are latency percentiles (nearest rank).
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// requestBody is the chat completion every request sends.
const requestBody = `{"model":"` + Model + `","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark in one short sentence, please."}],"max_tokens":64}`

// streamRequestBody is the same chat completion, streamed, with the usage
// chunk at its end.
const streamRequestBody = `{"model":"` + Model + `","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark in one short sentence, please."}],"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}`

// withDefaults returns cfg with defaults applied.
func (cfg Config) withDefaults() Config {
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultRequests
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	switch {
	case cfg.Warmup == 0:
		cfg.Warmup = DefaultWarmup
	case cfg.Warmup < 0:
		cfg.Warmup = 0
	}
	if cfg.ChildLogLevel == "" {
		cfg.ChildLogLevel = "warn"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

func (cfg Config) validate() error {
	switch {
	case cfg.DatabaseURL == "":
		return errors.New("bench: DatabaseURL is required")
	case cfg.UpstreamLatency < 0:
		return fmt.Errorf("bench: UpstreamLatency must not be negative, got %s", cfg.UpstreamLatency)
	case len(cfg.ChildCommand) == 0:
		return errors.New("bench: ChildCommand is required (the gateways run in processes of their own)")
	}
	return nil
}

// Run runs the bench. Failed requests are counted in the report, not
// returned as an error; an error means the bench itself could not run.
func Run(ctx context.Context, cfg Config) (_ Report, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	r := &runner{cfg: cfg, log: cfg.Logger}
	defer func() { err = errors.Join(err, r.close(ctx)) }()
	if err := r.start(ctx); err != nil {
		return Report{}, err
	}
	rep := newReport(cfg)
	if err := r.warmup(ctx); err != nil {
		return Report{}, err
	}
	phases := []struct {
		name string
		ph   *Phase
		run  func(context.Context) (Phase, error)
	}{
		{"light load", &rep.Light, func(ctx context.Context) (Phase, error) { return r.light(ctx, false) }},
		{"load", &rep.Load, r.load},
		{"streaming", &rep.Stream, func(ctx context.Context) (Phase, error) { return r.light(ctx, true) }},
	}
	for _, p := range phases {
		r.log.Info("bench phase", "phase", p.name, "requests", cfg.Requests)
		if *p.ph, err = p.run(ctx); err != nil {
			return Report{}, err
		}
	}
	r.log.Info("bench phase", "phase", "rebuild")
	if rep.Rebuild, err = r.rebuild(ctx); err != nil {
		return Report{}, err
	}
	rep.PostgresMeasured = !r.remote
	rep.finish()
	return rep, nil
}
