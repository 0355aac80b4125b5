package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/procfs"
)

// Report is the result of a run.
type Report struct {
	// Config is the run's configuration, defaults applied.
	Config Config `json:"config"`
	// Bus is "postgresql" or "kafka".
	Bus     string  `json:"bus"`
	Machine Machine `json:"machine"`
	// Light is one request at a time, the targets taking turns; Load
	// Config.Concurrency at once, one target after the other; Stream is
	// Light with "stream": true.
	Light  Phase `json:"light"`
	Load   Phase `json:"load"`
	Stream Phase `json:"stream"`
	// Rebuild is `tollgate project rebuild` of every event of the run.
	Rebuild Rebuild `json:"rebuild"`
	// PostgresMeasured is false when PostgreSQL's processes were not on
	// this machine: its CPU is then missing from the figures.
	PostgresMeasured bool `json:"postgres_measured"`
	// Targets are issue 10's targets, measured.
	Targets []Check `json:"targets"`
}

// Machine is what the run ran on.
type Machine struct {
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	// LoadAverage is the 1-minute load average when the run started: on
	// a shared machine, how busy others kept it.
	LoadAverage float64 `json:"load_average"`
}

// Phase is one phase's result for each target.
type Phase struct {
	Concurrency int    `json:"concurrency"`
	Direct      Result `json:"direct"`
	Reference   Result `json:"reference"`
	Tollgate    Result `json:"tollgate"`
}

// Result is one target's figures in a phase.
type Result struct {
	Stats
	// FirstChunk is the latency to the first server-sent event (streaming only).
	FirstChunk *Stats `json:"first_chunk,omitempty"`
	CPU        CPU    `json:"cpu"`
	// CPUPerRequest is CPU.Total per request: the gateway's process and
	// its PostgreSQL backends (0 for direct, which has no gateway).
	CPUPerRequest time.Duration `json:"cpu_per_request_ns"`
}

// Rebuild is the rebuild phase's result.
type Rebuild struct {
	Events          int64         `json:"events"`
	Elapsed         time.Duration `json:"elapsed_ns"`
	EventsPerSecond float64       `json:"events_per_second"`
	CPU             CPU           `json:"cpu"`
	CPUPerEvent     time.Duration `json:"cpu_per_event_ns"`
	// Equal is whether the rebuilt read models equal the live ones; Diffs
	// says how they differ otherwise.
	Equal bool     `json:"equal"`
	Diffs []string `json:"diffs,omitempty"`
}

// Check is one of issue 10's targets: Tollgate's figure, the reference's
// beside it where it has one, and whether Tollgate meets the target.
type Check struct {
	Target    string `json:"target"`
	Tollgate  string `json:"tollgate"`
	Reference string `json:"reference,omitempty"`
	Met       bool   `json:"met"`
}

func newReport(cfg Config) Report {
	rep := Report{Config: cfg, Bus: "postgresql", Machine: Machine{OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version()}}
	if len(cfg.KafkaBrokers) > 0 {
		rep.Bus = "kafka"
	}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if la, err := fs.LoadAvg(); err == nil {
			rep.Machine.LoadAverage = la.Load1
		}
	}
	return rep
}

// finish computes the per-request figures and checks the targets.
func (r *Report) finish() {
	for _, ph := range r.phases() {
		for _, res := range []*Result{&ph.Direct, &ph.Reference, &ph.Tollgate} {
			res.CPUPerRequest = Per(res.CPU.Total(), int64(res.Requests))
		}
	}
	r.Rebuild.CPUPerEvent = Per(r.Rebuild.CPU.Total(), r.Rebuild.Events)
	r.Targets = r.checks()
}

func (r *Report) phases() []*Phase { return []*Phase{&r.Light, &r.Load, &r.Stream} }

// Errors counts the failed requests of every phase and target.
func (r Report) Errors() int {
	n := 0
	for _, ph := range r.phases() {
		n += ph.Direct.Errors + ph.Reference.Errors + ph.Tollgate.Errors
	}
	return n
}

// Issue 10's targets.
const (
	targetThroughput = 4000                   // completions/s at 32 concurrent
	targetCPU        = 400 * time.Microsecond // per completion, Tollgate and PostgreSQL
	targetAddedP50   = 500 * time.Microsecond // at light load
	targetAddedP99   = 2 * time.Millisecond
	targetFirstChunk = 300 * time.Microsecond // a stream's first event, later than direct
	targetRebuild    = 50_000                 // events/s
)

// checks measures issue 10's targets.
func (r Report) checks() []Check {
	l, ld, s := r.Light, r.Load, r.Stream
	ratio := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	added := func(res, direct Stats, p func(Stats) time.Duration) time.Duration { return p(res) - p(direct) }
	p50 := func(s Stats) time.Duration { return s.P50 }
	p99 := func(s Stats) time.Duration { return s.P99 }
	conc := "at 32 concurrent"
	if c := r.Config.Concurrency; c != 32 {
		conc = fmt.Sprintf("at 32 concurrent (measured at %d)", c)
	}
	first := func(res Result) Stats {
		if res.FirstChunk == nil {
			return Stats{}
		}
		return *res.FirstChunk
	}
	tgFirst := added(first(s.Tollgate), first(s.Direct), p50)
	refFirst := added(first(s.Reference), first(s.Direct), p50)
	tp := ratio(ld.Tollgate.Throughput, ld.Reference.Throughput)
	return []Check{
		{"≥ 4,000 completions/s " + conc, perSecond(ld.Tollgate.Throughput), perSecond(ld.Reference.Throughput), ld.Tollgate.Throughput >= targetThroughput},
		{"≥ 1.0× the reference's throughput " + conc, fmt.Sprintf("%.2f×", tp), "", tp >= 1},
		{"≤ 0.40 ms CPU per completion, Tollgate + PostgreSQL (load, catch-up included)",
			msCPUUnit(ld.Tollgate.CPUPerRequest), msCPUUnit(ld.Reference.CPUPerRequest), r.PostgresMeasured && ld.Tollgate.CPUPerRequest <= targetCPU},
		{"≤ 0.5 ms added p50 at light load", ms(added(l.Tollgate.Stats, l.Direct.Stats, p50)), ms(added(l.Reference.Stats, l.Direct.Stats, p50)),
			added(l.Tollgate.Stats, l.Direct.Stats, p50) <= targetAddedP50},
		{"≤ 2 ms added p99 at light load", ms(added(l.Tollgate.Stats, l.Direct.Stats, p99)), ms(added(l.Reference.Stats, l.Direct.Stats, p99)),
			added(l.Tollgate.Stats, l.Direct.Stats, p99) <= targetAddedP99},
		{"stream: first chunk ≤ 0.3 ms later than direct (p50)", ms(tgFirst), ms(refFirst), tgFirst <= targetFirstChunk},
		{"rebuild ≥ 50,000 events/s", thousands(r.Rebuild.EventsPerSecond) + " events/s", "", r.Rebuild.EventsPerSecond >= targetRebuild},
	}
}

// WriteJSON writes the report as one JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
	return nil
}

// Write writes the report as tables, with the facts of the machine it ran on.
func (r Report) Write(w io.Writer) error {
	c, m := r.Config, r.Machine
	var b bytes.Buffer
	fmt.Fprintf(&b, "tollgate bench: %d requests per phase and target, %d warmup, load concurrency %d, upstream latency %s, bus %s\n",
		c.Requests, c.Warmup, c.Concurrency, c.UpstreamLatency, r.Bus)
	fmt.Fprintf(&b, "machine: %s/%s, %d CPUs, GOMAXPROCS %d, %s, load average %.2f at the start; the bench client and the fake upstream\n"+
		"in one process, the reference proxy and Tollgate (every role) each in a process of its own, PostgreSQL beside them\n\n",
		m.OS, m.Arch, m.CPUs, m.GOMAXPROCS, m.Go, m.LoadAverage)
	r.writeLatency(&b)
	r.writeStream(&b)
	r.writeSummary(&b)
	r.writeTargets(&b)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
	return nil
}

// cpuColumns are the CPU columns of a row: per request, the gateway and
// PostgreSQL together and each, PostgreSQL's shared processes, then the
// machine's busy cores and those of other processes.
const cpuColumns = "CPU ms/req\tgateway\tpostgres\tpg shared\tbusy\tothers\t"

func cpuCells(res Result, gateway bool) string {
	n := int64(res.Requests)
	cores := func(d time.Duration) string {
		if res.CPU.Wall < 100*time.Millisecond {
			return "-" // a few ticks of 10 ms: no figure
		}
		return fmt.Sprintf("%.2f", d.Seconds()/res.CPU.Wall.Seconds())
	}
	shared, busy, others := msCPU(Per(res.CPU.PostgresShared, n)), cores(res.CPU.Machine), cores(res.CPU.Others)
	if !gateway {
		return fmt.Sprintf("-\t-\t-\t%s\t%s\t%s\t", shared, busy, others)
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t", msCPU(res.CPUPerRequest), msCPU(Per(res.CPU.Gateway, n)),
		msCPU(Per(res.CPU.Postgres, n)), shared, busy, others)
}

func (r Report) writeLatency(b *bytes.Buffer) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\ttarget\tconc\trequests\terrors\treq/s\tp50\tp90\tp99\tmax\t"+cpuColumns)
	for _, p := range []struct {
		name string
		ph   Phase
	}{{"light", r.Light}, {"load", r.Load}} {
		for i, res := range []Result{p.ph.Direct, p.ph.Reference, p.ph.Tollgate} {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\n", p.name, targetName(i), p.ph.Concurrency, res.Requests, res.Errors,
				res.Throughput, ms(res.P50), ms(res.P90), ms(res.P99), ms(res.Max), cpuCells(res, i > 0))
		}
	}
	_ = tw.Flush() // a bytes.Buffer does not fail
}

// targetName names the i-th target in a Phase's order.
func targetName(i int) string { return [...]string{"direct", "reference", "tollgate"}[i] }

func (r Report) writeStream(b *bytes.Buffer) {
	fmt.Fprintln(b)
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stream\ttarget\tconc\trequests\terrors\tfirst p50\tfirst p90\tfirst p99\tfirst max\ttotal p50\ttotal p99\t"+cpuColumns)
	for i, res := range []Result{r.Stream.Direct, r.Stream.Reference, r.Stream.Tollgate} {
		f := Stats{}
		if res.FirstChunk != nil {
			f = *res.FirstChunk
		}
		fmt.Fprintf(tw, "stream\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", targetName(i), r.Stream.Concurrency, res.Requests, res.Errors,
			ms(f.P50), ms(f.P90), ms(f.P99), ms(f.Max), ms(res.P50), ms(res.P99), cpuCells(res, i > 0))
	}
	_ = tw.Flush()
}

func (r Report) writeSummary(b *bytes.Buffer) {
	l, ld := r.Light, r.Load
	fmt.Fprintf(b, "\nlight load, added over direct: reference p50 %s, p99 %s; Tollgate p50 %s, p99 %s\n",
		ms(l.Reference.P50-l.Direct.P50), ms(l.Reference.P99-l.Direct.P99), ms(l.Tollgate.P50-l.Direct.P50), ms(l.Tollgate.P99-l.Direct.P99))
	if ld.Reference.Throughput > 0 && ld.Reference.CPUPerRequest > 0 {
		fmt.Fprintf(b, "load, Tollgate / reference: throughput %.2f×, CPU per request %.2f× (Tollgate %s = %s process + %s PostgreSQL; reference %s)\n",
			ld.Tollgate.Throughput/ld.Reference.Throughput, float64(ld.Tollgate.CPUPerRequest)/float64(ld.Reference.CPUPerRequest),
			msCPUUnit(ld.Tollgate.CPUPerRequest), msCPU(Per(ld.Tollgate.CPU.Gateway, int64(ld.Tollgate.Requests))),
			msCPU(Per(ld.Tollgate.CPU.Postgres, int64(ld.Tollgate.Requests))), msCPUUnit(ld.Reference.CPUPerRequest))
	}
	fmt.Fprintf(b, "Tollgate's CPU includes its relay and projector catching up after the phase's last answer (load: %s); its billing\n"+
		"reporter is off in the bench (no Stripe key): it sends one meter event per account and billing window (1 h), none falls due in a run\n",
		ms(ld.Tollgate.CPU.CatchUp))
	s := r.Stream
	if s.Direct.FirstChunk != nil && s.Reference.FirstChunk != nil && s.Tollgate.FirstChunk != nil {
		fmt.Fprintf(b, "stream, first chunk added over direct: reference p50 %s; Tollgate p50 %s\n",
			ms(s.Reference.FirstChunk.P50-s.Direct.FirstChunk.P50), ms(s.Tollgate.FirstChunk.P50-s.Direct.FirstChunk.P50))
	}
	rb := r.Rebuild
	equal := "rebuild equals the live read models"
	if !rb.Equal {
		equal = "REBUILD DIFFERS from the live read models:\n  " + strings.Join(rb.Diffs, "\n  ")
	}
	fmt.Fprintf(b, "rebuild: %d events in %s, %s events/s, CPU %s per event (%s process + %s PostgreSQL); %s\n",
		rb.Events, rb.Elapsed.Round(time.Millisecond), thousands(rb.EventsPerSecond), msCPUUnit(rb.CPUPerEvent),
		msCPU(Per(rb.CPU.Gateway, rb.Events)), msCPU(Per(rb.CPU.Postgres, rb.Events)), equal)
	fmt.Fprintln(b, "CPU (per request, from /proc, ±10 ms per process and phase): gateway is its process; postgres the backends of its\n"+
		"connections (pg_stat_activity by application_name, sampled at the phase's start and end); pg shared is PostgreSQL's\n"+
		"background processes (walwriter, checkpointer, background writer, autovacuum), which serve every database on the\n"+
		"server and are not in CPU/req; busy and others are the machine's busy cores and those of processes outside the bench")
	if !r.PostgresMeasured {
		fmt.Fprintln(b, "WARNING: PostgreSQL does not run on this machine (its pids are no postgres processes here): its CPU is missing")
	}
	if n := r.Errors(); n > 0 {
		fmt.Fprintf(b, "WARNING: %d requests failed (see the log)\n", n)
	}
}

func (r Report) writeTargets(b *bytes.Buffer) {
	fmt.Fprintln(b, "\ntargets (issue 10):")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  target\ttollgate\treference\tmet")
	for _, c := range r.Targets {
		met := "no"
		if c.Met {
			met = "yes"
		}
		ref := c.Reference
		if ref == "" {
			ref = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Target, c.Tollgate, ref, met)
	}
	_ = tw.Flush()
}

// ms formats d in milliseconds with a precision that suits sub-millisecond latencies.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// msCPU formats a CPU time per request in milliseconds, for a table
// whose header says the unit.
func msCPU(d time.Duration) string {
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

// msCPUUnit is msCPU with its unit.
func msCPUUnit(d time.Duration) string { return msCPU(d) + " ms" }

// thousands formats v rounded, with thousands separators.
func thousands(v float64) string {
	s := fmt.Sprint(int64(v + 0.5))
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// perSecond formats a rate of completions.
func perSecond(v float64) string { return thousands(v) + "/s" }
