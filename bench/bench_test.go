package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pgtest"
)

// TestMain runs a bench child process when the bench started this test
// binary as one (Config.ChildCommand), and the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv(ChildEnv); spec != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := RunChild(ctx, spec, os.Stdin, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun runs the bench small: every phase has every target's figures
// and no failed request, the gateways' CPU was read, the rebuild rebuilt
// the run's events into read models equal to the live ones, and the
// report names every phase and target. It never checks a timing.
func TestRun(t *testing.T) {
	// Not parallel: it measures latencies.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	rep, err := Run(ctx, Config{DatabaseURL: pgtest.ServerURL(), Requests: n, Concurrency: 4, Warmup: 5, Logger: logger,
		ChildCommand: []string{exe}, ChildStderr: t.Output()})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, pgtest.HowToStart)
	}
	for _, p := range []struct {
		name string
		ph   Phase
	}{{"light", rep.Light}, {"load", rep.Load}, {"stream", rep.Stream}} {
		for i, res := range []Result{p.ph.Direct, p.ph.Reference, p.ph.Tollgate} {
			name := p.name + " " + targetName(i)
			if res.Requests != n || res.Errors != 0 {
				t.Errorf("%s: %d requests, %d errors; want %d, 0", name, res.Requests, res.Errors, n)
			}
			if res.P50 <= 0 || res.P90 <= 0 || res.P99 <= 0 || res.Max <= 0 || res.Elapsed <= 0 || res.Throughput <= 0 || res.CPU.Wall <= 0 {
				t.Errorf("%s: zero statistics: %+v", name, res)
			}
			if (p.name == "stream") != (res.FirstChunk != nil) || (res.FirstChunk != nil && res.FirstChunk.P50 <= 0) {
				t.Errorf("%s: first chunk %+v", name, res.FirstChunk)
			}
		}
	}
	if !rep.PostgresMeasured {
		t.Error("PostgreSQL's CPU was not measured (pgtest's server runs on this machine)")
	}
	// Tollgate's process did the work of a whole phase: its CPU cannot be
	// zero, unlike a few cheap requests' (10 ms ticks).
	if rep.Light.Tollgate.CPU.Gateway+rep.Load.Tollgate.CPU.Gateway+rep.Stream.Tollgate.CPU.Gateway <= 0 {
		t.Errorf("Tollgate's process used no CPU: %+v", rep.Load.Tollgate.CPU)
	}
	// 3 phases of n and the warmup through Tollgate, each completion several events.
	if rb := rep.Rebuild; rb.Events < 3*n || rb.Elapsed <= 0 || rb.EventsPerSecond <= 0 || !rb.Equal {
		t.Errorf("rebuild: %+v", rb)
	}
	if len(rep.Targets) != 7 {
		t.Errorf("%d targets checked, want 7: %+v", len(rep.Targets), rep.Targets)
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GOMAXPROCS", "go1.", "light", "load", "stream", "rebuild:", "direct", "reference", "tollgate",
		"p99", "CPU ms/req", "first p50", "targets (issue 10)", "≥ 4,000 completions/s", "≤ 0.40 ms CPU", "added p50", "added p99",
		"first chunk ≤ 0.3 ms", "rebuild ≥ 50,000", "rebuild equals the live read models"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "WARNING") {
		t.Errorf("report warns:\n%s", out.String())
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Load.Tollgate.Requests != n || len(back.Targets) != 7 {
		t.Errorf("JSON report: %v, %+v", err, back.Load.Tollgate)
	}
	t.Logf("\n%s", out.String())
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i))
	}
	for p, want := range map[int]time.Duration{50: 50, 90: 90, 99: 99, 100: 100} {
		if got := percentile(lat, p); got != want {
			t.Errorf("p%d = %d, want %d", p, got, want)
		}
	}
	if got := percentile([]time.Duration{7}, 50); got != 7 {
		t.Errorf("p50 of one = %d, want 7", got)
	}
}

func TestBenchDatabase(t *testing.T) {
	t.Parallel()
	db, maint, name, err := benchDatabase("postgres://u:p@127.0.0.1:5432/tollgate?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "tollgate_bench_") || !strings.Contains(db, "/"+name+"?sslmode=disable") ||
		maint != "postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable" {
		t.Errorf("got %s %s %s", db, maint, name)
	}
	if _, _, _, err := benchDatabase("host=127.0.0.1 dbname=x"); err == nil {
		t.Error("a key=value DSN was accepted")
	}
}

// TestChildThatFailsSaysWhy: a child that dies before it is ready fails
// the wait with the end of its log, and stopping it reports its exit.
func TestChildThatFailsSaysWhy(t *testing.T) {
	t.Parallel()
	c, err := startChild([]string{"sh", "-c", "echo the database is gone >&2; exit 3"}, childSpec{Role: roleTollgate}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.next(context.Background(), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "the database is gone") {
		t.Errorf("next: %v, want the child's log in the error", err)
	}
	if err := c.stop(time.Minute); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("stop: %v, want its exit status", err)
	}
}

// TestChildThatHangsIsKilled: a child that ignores its closed stdin is
// killed after the grace period.
func TestChildThatHangsIsKilled(t *testing.T) {
	t.Parallel()
	c, err := startChild([]string{"sh", "-c", "trap '' TERM; exec sleep 600"}, childSpec{Role: roleReference}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.stop(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stop: %v, want it killed", err)
	}
}
