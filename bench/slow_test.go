package bench

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pgtest"
)

// TestRunSlow runs the slow mode small, Tollgate in a child process (this
// test binary again, see TestMain): every request answered 200 on both
// targets, every success recorded as an event, the upstream holding them
// all at once, over a few h2c connections, on the default pool; the
// figures of Tollgate's process come from that process. The upstream
// holds each request 1.5 s so that, on a busy machine too, the last
// request arrives before the first is answered.
func TestRunSlow(t *testing.T) {
	// Not parallel: it measures concurrency, latencies and memory.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	heap := filepath.Join(t.TempDir(), "heap.pprof")
	rep, err := RunSlow(ctx, SlowConfig{DatabaseURL: pgtest.ServerURL(), Requests: n, UpstreamLatency: 1500 * time.Millisecond, Logger: logger,
		ChildCommand: []string{exe}, ChildStderr: t.Output(), HeapProfile: heap, GoMemLimit: "1GiB"})
	if err != nil {
		t.Fatalf("RunSlow: %v\n%s", err, pgtest.HowToStart)
	}
	if err := rep.Failed(); err != nil {
		t.Errorf("run failed: %v (errors: direct %v, tollgate %v)", err, rep.Direct.Errors, rep.Tollgate.Errors)
	}
	for name, p := range map[string]SlowPhase{"direct": rep.Direct, "tollgate": rep.Tollgate} {
		if p.Requests != n || p.Succeeded != n || len(p.Errors) != 0 {
			t.Errorf("%s: %d requests, %d succeeded, errors %v; want %d, %d, none", name, p.Requests, p.Succeeded, p.Errors, n, n)
		}
		// All n were in flight at the upstream at once: the bench measures concurrency, not a queue.
		if p.UpstreamPeak != n {
			t.Errorf("%s: upstream held %d requests at once, want %d", name, p.UpstreamPeak, n)
		}
		// h2c: n requests over far fewer connections than one each.
		if p.Connections < 1 || p.Connections >= n || p.UpstreamConnections < 1 || p.UpstreamConnections >= n {
			t.Errorf("%s: %d connections in, %d to the upstream for %d requests; want h2c multiplexing", name, p.Connections, p.UpstreamConnections, n)
		}
		if p.P50 <= 0 || p.P99 < p.P50 || p.Max < p.P99 {
			t.Errorf("%s: implausible latencies %+v", name, p)
		}
		for who, pk := range map[string]Peaks{"process": p.Process, "bench": p.Bench} {
			if pk.Goroutines < n || pk.HeapBytes == 0 || pk.StackBytes == 0 || pk.RSSBytes == 0 || pk.HWMBytes == 0 {
				t.Errorf("%s: implausible peaks of the %s: %+v", name, who, pk)
			}
		}
	}
	// Tollgate's figures are its own process's: the bench's process is
	// another, and measured apart; the direct phase has no other process.
	if rep.Direct.Process != rep.Direct.Bench || rep.Tollgate.Process == rep.Tollgate.Bench {
		t.Errorf("peaks: direct %+v / %+v, tollgate %+v / %+v; want direct's one process, tollgate's two",
			rep.Direct.Process, rep.Direct.Bench, rep.Tollgate.Process, rep.Tollgate.Bench)
	}
	// Tollgate's process ran with the GOMEMLIMIT asked for, whatever the bench's environment says.
	if rep.Runtime.MemoryLimit != 1<<30 {
		t.Errorf("Tollgate's memory limit %d, want 1GiB", rep.Runtime.MemoryLimit)
	}
	if rep.Tollgate.Process.CPU <= 0 {
		t.Errorf("Tollgate's process used no CPU: %+v", rep.Tollgate.Process)
	}
	// Written by Tollgate's process while every request was in flight.
	if fi, err := os.Stat(heap); err != nil || fi.Size() == 0 {
		t.Errorf("heap profile: %v, %v", fi, err)
	}
	if rep.Requested != n || rep.Recorded != n {
		t.Errorf("recorded %d requested and %d succeeded events, want %d each", rep.Requested, rep.Recorded, n)
	}
	if rep.Pool.MaxConns != 20 || rep.Pool.PeakAcquired < 1 || rep.Pool.PeakAcquired > rep.Pool.MaxConns || rep.Pool.PeakTotal > rep.Pool.MaxConns {
		t.Errorf("pool: %+v; want size 20 (the default), peak acquired between 1 and 20", rep.Pool)
	}
	if rep.Pool.Acquires < n {
		t.Errorf("pool: %d acquires for %d requests; each records at least one append", rep.Pool.Acquires, n)
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GOMAXPROCS", "GOMEMLIMIT 1024MiB", "peak goroutines", "peak RSS", "database pool: size 20", "50 completion.succeeded"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "FAILED") {
		t.Errorf("report says FAILED:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
