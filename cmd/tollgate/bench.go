package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	tgbench "github.com/tollgate/tollgate/bench"
	"github.com/tollgate/tollgate/config"
)

// benchChildArg is the hidden argument with which `tollgate bench`
// re-executes itself to run one of the bench's child processes (a gateway
// or the rebuild), whose spec is in the environment (tgbench.ChildEnv).
const benchChildArg = "-bench-child"

// bench runs `tollgate bench`: the fake upstream and the bench client in
// this process, the gateways in child processes, measured side by side;
// the report goes to stdout, the log to stderr.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	if len(args) == 1 && args[0] == benchChildArg {
		return tgbench.RunChild(ctx, os.Getenv(tgbench.ChildEnv), os.Stdin, stdout, stderr)
	}
	opts, err := parseBenchFlags(args, stderr)
	if err != nil || opts == nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find this binary to run the gateways: %w", err)
	}
	childCommand := []string{exe, "bench", benchChildArg}
	if opts.slow > 0 {
		return benchSlow(ctx, opts, childCommand, stdout, stderr)
	}
	cfg := opts.cfg
	cfg.ChildCommand = childCommand
	cfg.ChildStderr, cfg.ChildLogLevel = stderr, opts.logLevel
	cfg.CPUProfile, cfg.BlockProfile = opts.cpuProfile, opts.blockProfile
	rep, err := tgbench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if opts.json {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.Write(stdout)
	}
	if err != nil {
		return err
	}
	if n := rep.Errors(); n > 0 {
		return fmt.Errorf("bench: %d requests failed", n)
	}
	if !rep.Rebuild.Equal {
		return errors.New("bench: the rebuilt read models differ from the live ones")
	}
	return nil
}

// benchOptions are `tollgate bench`'s flags.
type benchOptions struct {
	cfg                                                         tgbench.Config
	slow, dbConns                                               int
	cpuProfile, blockProfile, heapProfile, logLevel, goMemLimit string
	json                                                        bool
}

const benchUsage = `usage: tollgate bench [flags]

Creates a database tollgate_bench_<random> on the PostgreSQL server of
TOLLGATE_DATABASE_URL (dropped at the end), starts a fake OpenAI-compatible
upstream and the bench client in this process, and two gateways each in a
process of its own (this binary again): a naive reference proxy (decode,
one durable INSERT, forward, decode, one durable INSERT, answer) and
Tollgate with every role. It sends the same chat completions straight to
the upstream, through the reference and through Tollgate, and reports per
target and phase req/s, p50/p90/p99/max, errors, and the CPU per request of
the gateway's process and of the PostgreSQL backends serving it (from
/proc; PostgreSQL must run on this machine for its share), with the ratios
to the reference and issue 10's targets:
  light    one request at a time, the three targets taking turns
  load     -concurrency at once, one target after the other; Tollgate's CPU
           until its relay and projector have caught up with the log
  stream   light, "stream": true: time to the first event and to the end
  rebuild  tollgate project rebuild of every event the run recorded

With -slow N it instead sends N synchronous completions at once, against an
upstream that thinks -upstream-latency (10s when unset) per request, first
straight to the upstream and then through Tollgate over h2c (client and
upstream in this process, Tollgate in its own), and reports successes,
errors by kind, p50/p99 latency, the peak goroutines, heap, stacks and RSS
and the CPU of the target's process (Tollgate's own, for Tollgate), the
database pool's peak use, and the completion.succeeded events recorded:
tollgate bench -slow 10000 -upstream-latency 10s

flags:
`

// parseBenchFlags parses `tollgate bench`'s flags; nil options and no
// error mean -h was asked for.
func parseBenchFlags(args []string, stderr io.Writer) (*benchOptions, error) {
	fs := flag.NewFlagSet("tollgate bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	o := &benchOptions{}
	cfg := &o.cfg
	fs.IntVar(&cfg.Requests, "requests", tgbench.DefaultRequests, "requests per phase and target")
	fs.IntVar(&cfg.Concurrency, "concurrency", tgbench.DefaultConcurrency, "requests in flight in the load phase")
	fs.IntVar(&cfg.Warmup, "warmup", tgbench.DefaultWarmup, "unmeasured requests per target first (0 = none)")
	fs.DurationVar(&cfg.UpstreamLatency, "upstream-latency", 0, "the fake upstream's think time per request, e.g. 50ms")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the bench's database for inspection")
	fs.IntVar(&o.slow, "slow", 0, "slow mode: send this many synchronous completions at once (e.g. 10000, with -upstream-latency 10s), straight to the upstream and through Tollgate")
	fs.IntVar(&o.dbConns, "db-conns", 0, "slow mode: Tollgate's database pool size (0 = the server's default, 20)")
	fs.StringVar(&o.goMemLimit, "gomemlimit", "", "slow mode: run Tollgate's process with this GOMEMLIMIT, Go's soft memory limit (e.g. 550MiB; unset = this environment's)")
	kafka := fs.String("kafka", "", "comma-separated Kafka brokers: run Tollgate with the Kafka bus (use a dedicated Kafka)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of Tollgate's process to this file")
	fs.StringVar(&o.heapProfile, "heapprofile", "", "slow mode: Tollgate's process writes a heap profile to this file while every request through it is in flight")
	fs.StringVar(&o.blockProfile, "blockprofile", "", "write a profile of where Tollgate's goroutines waited (channels, locks, I/O) to this file")
	fs.BoolVar(&o.json, "json", false, "write the report as JSON (durations in nanoseconds)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level on stderr, of the bench and of its child processes: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return nil, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = -1 // tgbench.Config: negative means none
	}
	for _, b := range strings.Split(*kafka, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.KafkaBrokers = append(cfg.KafkaBrokers, b)
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("bench: -log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.DatabaseURL = config.DefaultDatabaseURL
	if u := strings.TrimSpace(os.Getenv("TOLLGATE_DATABASE_URL")); u != "" {
		cfg.DatabaseURL = u
	}
	return o, nil
}

// benchSlow runs the slow mode (-slow N), Tollgate in a child process
// (childCommand).
func benchSlow(ctx context.Context, o *benchOptions, childCommand []string, stdout, stderr io.Writer) error {
	if o.dbConns < 0 || o.dbConns > 10_000 {
		return fmt.Errorf("bench: -db-conns must be between 0 and 10000, got %d", o.dbConns)
	}
	cfg := o.cfg
	rep, err := tgbench.RunSlow(ctx, tgbench.SlowConfig{DatabaseURL: cfg.DatabaseURL, Keep: cfg.Keep, Requests: o.slow,
		UpstreamLatency: cfg.UpstreamLatency, MaxDBConns: int32(o.dbConns), Logger: cfg.Logger,
		ChildCommand: childCommand, ChildStderr: stderr, ChildLogLevel: o.logLevel,
		HeapProfile: o.heapProfile, CPUProfile: o.cpuProfile, BlockProfile: o.blockProfile, GoMemLimit: o.goMemLimit})
	if err != nil {
		return err
	}
	if err := rep.Write(stdout); err != nil {
		return err
	}
	if err := rep.Failed(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
