package bench

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pgtest"
)

func TestRun(t *testing.T) {
	// Not parallel: it measures latencies.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := Run(ctx, Config{DatabaseURL: pgtest.ServerURL(), Requests: 20, Concurrency: 4, Warmup: 5, Logger: logger})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, pgtest.HowToStart)
	}
	for name, s := range map[string]Stats{"direct": rep.Direct, "tollgate": rep.Tollgate, "direct load": rep.DirectLoad, "tollgate load": rep.TollgateLoad} {
		if s.Requests != 20 || s.Errors != 0 {
			t.Errorf("%s: %d requests, %d errors; want 20, 0", name, s.Requests, s.Errors)
		}
		if s.P50 <= 0 || s.P90 <= 0 || s.P99 <= 0 || s.Max <= 0 || s.Elapsed <= 0 || s.Throughput <= 0 {
			t.Errorf("%s: zero statistics: %+v", name, s)
		}
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GOMAXPROCS", "go1.", "tollgate", "direct", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
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
