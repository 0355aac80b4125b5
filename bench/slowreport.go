package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
)

// countRecorded counts the completions requested and succeeded in the
// bench's event store: what was durably recorded, not what was answered.
func countRecorded(ctx context.Context, dbURL string) (requested, succeeded int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: count recorded events: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE type = $1), count(*) FILTER (WHERE type = $2) FROM events`,
		events.TypeCompletionRequested, events.TypeCompletionSucceeded).Scan(&requested, &succeeded)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: count recorded events: %w", err)
	}
	return requested, succeeded, nil
}

// Write writes the report, with the facts of the machine it ran on.
func (r SlowReport) Write(w io.Writer) error {
	c := r.Config
	var b bytes.Buffer
	fmt.Fprintf(&b, "tollgate bench -slow: %d concurrent synchronous chat completions, upstream latency %s, database pool %d\n",
		c.Requests, c.UpstreamLatency, r.Pool.MaxConns)
	fmt.Fprintf(&b, "machine: %s/%s, %d CPUs, GOMAXPROCS %d, %s; client and upstream in the bench's process, Tollgate in its own, h2c between them\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(&b, "peaks and CPU are of the target's process: direct's the bench's (client and upstream), tollgate's Tollgate's alone\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trequests\tok\tfailed\twall\tp50\tp99\tmax\tupstream peak\tconns in\tconns to upstream\tpeak goroutines\tpeak heap\tpeak stacks\tpeak RSS\tCPU\t")
	row := func(name string, p SlowPhase) {
		pk := p.Process
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", name, p.Requests, p.Succeeded, p.Requests-p.Succeeded,
			secs(p.Elapsed), secs(p.P50), secs(p.P99), secs(p.Max), p.UpstreamPeak, p.Connections, p.UpstreamConnections,
			pk.Goroutines, mib(pk.HeapBytes), mib(pk.StackBytes), mib(pk.RSSBytes), secs(pk.CPU))
	}
	row("direct", r.Direct)
	row("tollgate", r.Tollgate)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
	tg, bp := r.Tollgate.Process, r.Tollgate.Bench
	fmt.Fprintf(&b, "tollgate's process: VmHWM (peak resident, whole life) %s, %s; the bench's process in that phase: peak goroutines %d, heap %s, RSS %s\n",
		mib(tg.HWMBytes), r.Runtime, bp.Goroutines, mib(bp.HeapBytes), mib(bp.RSSBytes))
	for _, p := range []struct {
		name string
		ph   SlowPhase
	}{{"direct", r.Direct}, {"tollgate", r.Tollgate}} {
		for _, k := range slices.Sorted(maps.Keys(p.ph.Errors)) {
			fmt.Fprintf(&b, "errors %s: %s × %d\n", p.name, k, p.ph.Errors[k])
		}
	}
	p := r.Pool
	meanWait := time.Duration(0)
	if p.Waited > 0 {
		meanWait = p.AcquireWait / time.Duration(p.Waited)
	}
	fmt.Fprintf(&b, "\ndatabase pool: size %d, peak acquired %d, peak open %d; %d acquires (%.1f per request), %d waited for a connection (mean wait %s)\n",
		p.MaxConns, p.PeakAcquired, p.PeakTotal, p.Acquires, float64(p.Acquires)/float64(max(r.Tollgate.Requests, 1)), p.Waited, ms(meanWait))
	fmt.Fprintf(&b, "durably recorded: %d completion.requested, %d completion.succeeded events for %d successes\n",
		r.Requested, r.Recorded, r.Tollgate.Succeeded)
	if err := r.Failed(); err != nil {
		fmt.Fprintf(&b, "FAILED: %v\n", err)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
	return nil
}

// String says what GOMEMLIMIT and GOGC are.
func (g GoRuntime) String() string {
	limit := "no GOMEMLIMIT"
	if g.MemoryLimit > 0 && g.MemoryLimit < math.MaxInt64 {
		limit = "GOMEMLIMIT " + mib(uint64(g.MemoryLimit))
	}
	gogc := "GOGC 100"
	if g.GOGC != "" {
		gogc = "GOGC " + g.GOGC
	}
	return limit + ", " + gogc
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func mib(n uint64) string { return fmt.Sprintf("%.0fMiB", float64(n)/(1<<20)) }
