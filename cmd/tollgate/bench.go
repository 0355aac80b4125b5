package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"

	tgbench "github.com/tollgate/tollgate/bench"
	"github.com/tollgate/tollgate/config"
)

// bench runs `tollgate bench`: Tollgate and a fake upstream in process,
// measured side by side; the report goes to stdout, the log to stderr.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	opts, err := parseBenchFlags(args, stderr)
	if err != nil || opts == nil {
		return err
	}
	stop, err := startProfiles(opts.cpuProfile, opts.blockProfile)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stop()) }()
	if opts.slow > 0 {
		return benchSlow(ctx, opts, stdout)
	}
	rep, err := tgbench.Run(ctx, opts.cfg)
	if err != nil {
		return err
	}
	if err := rep.Write(stdout); err != nil {
		return err
	}
	if n := rep.Direct.Errors + rep.Tollgate.Errors + rep.DirectLoad.Errors + rep.TollgateLoad.Errors; n > 0 {
		return fmt.Errorf("bench: %d requests failed", n)
	}
	return nil
}

// benchOptions are `tollgate bench`'s flags.
type benchOptions struct {
	cfg                      tgbench.Config
	slow, dbConns            int
	cpuProfile, blockProfile string
}

const benchUsage = `usage: tollgate bench [flags]

Starts a fake OpenAI-compatible upstream and Tollgate (all roles) in this
process, on a database tollgate_bench_<random> created on the PostgreSQL
server of TOLLGATE_DATABASE_URL and dropped at the end, and reports the
throughput and the latency Tollgate adds over calling the upstream directly.

With -slow N it instead sends N synchronous completions at once, against an
upstream that thinks -upstream-latency (10s when unset) per request, first
straight to the upstream and then through Tollgate over h2c, and reports
successes, errors by kind, p50/p99 latency, the process's peak goroutines,
heap and RSS, the database pool's peak use, and the completion.succeeded
events recorded: tollgate bench -slow 10000 -upstream-latency 10s

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
	kafka := fs.String("kafka", "", "comma-separated Kafka brokers: run Tollgate with the Kafka bus (use a dedicated Kafka)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.StringVar(&o.blockProfile, "blockprofile", "", "write a profile of where goroutines waited (channels, locks, I/O) to this file")
	logLevel := fs.String("log-level", "warn", "log level on stderr: debug, info, warn, error")
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
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, fmt.Errorf("bench: -log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.DatabaseURL = config.DefaultDatabaseURL
	if u := strings.TrimSpace(os.Getenv("TOLLGATE_DATABASE_URL")); u != "" {
		cfg.DatabaseURL = u
	}
	return o, nil
}

// startProfiles starts the CPU profile and the block profile the flags
// ask for; stop ends them and writes their files.
func startProfiles(cpuProfile, blockProfile string) (stop func() error, err error) {
	var stops []func() error
	stop = func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		return errors.Join(errs...)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
		stops = append(stops, func() error {
			if cerr := f.Close(); cerr != nil {
				return fmt.Errorf("bench: cpu profile: %w", cerr)
			}
			return nil
		})
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, errors.Join(fmt.Errorf("bench: cpu profile: %w", err), stop())
		}
		stops = append(stops, func() error { pprof.StopCPUProfile(); return nil })
	}
	if blockProfile != "" {
		// Waits of 100µs and more: enough to see what serializes requests.
		runtime.SetBlockProfileRate(100_000)
		runtime.SetMutexProfileFraction(10)
		stops = append(stops, func() error {
			f, ferr := os.Create(blockProfile)
			if ferr != nil {
				return fmt.Errorf("bench: block profile: %w", ferr)
			}
			defer f.Close()
			if werr := pprof.Lookup("block").WriteTo(f, 0); werr != nil {
				return fmt.Errorf("bench: block profile: %w", werr)
			}
			return nil
		})
	}
	return stop, nil
}

// benchSlow runs the slow mode (-slow N).
func benchSlow(ctx context.Context, o *benchOptions, stdout io.Writer) error {
	if o.dbConns < 0 || o.dbConns > 10_000 {
		return fmt.Errorf("bench: -db-conns must be between 0 and 10000, got %d", o.dbConns)
	}
	cfg := o.cfg
	rep, err := tgbench.RunSlow(ctx, tgbench.SlowConfig{DatabaseURL: cfg.DatabaseURL, Keep: cfg.Keep, Requests: o.slow,
		UpstreamLatency: cfg.UpstreamLatency, MaxDBConns: int32(o.dbConns), Logger: cfg.Logger})
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
