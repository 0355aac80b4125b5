package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
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
	// Logger receives progress and failures; discarded when nil.
	Logger *slog.Logger
	// HeapProfile, when set, is where a heap profile is written while
	// every request through Tollgate is in flight.
	HeapProfile string
}

func (cfg SlowConfig) withDefaults() SlowConfig {
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultSlowRequests
	}
	if cfg.UpstreamLatency <= 0 {
		cfg.UpstreamLatency = DefaultSlowLatency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// SlowPhase is one target's figures in the slow mode. Peaks are of the
// whole process (bench client, fake upstream and, in the Tollgate phase,
// Tollgate), sampled every sampleEvery; the direct phase is the baseline
// without Tollgate.
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
	// PeakGoroutines, PeakHeapBytes (live and unswept heap objects) and
	// PeakRSSBytes are the process's sampled peaks.
	PeakGoroutines              int
	PeakHeapBytes, PeakRSSBytes uint64
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

// sampleEvery is how often the process's peaks are sampled.
const sampleEvery = 20 * time.Millisecond

// RunSlow starts the fake upstream (latency cfg.UpstreamLatency) and
// Tollgate, then sends cfg.Requests synchronous chat completions at once,
// first straight to the upstream, then through Tollgate, and reports what
// it took. Clients, Tollgate and the upstream speak h2c to each other, so
// the requests share a few connections (the machine's open-files limit
// would not allow two sockets per request on each of three hops in one
// process). Failed requests are counted, not returned as an error.
func RunSlow(ctx context.Context, cfg SlowConfig) (_ SlowReport, err error) {
	cfg = cfg.withDefaults()
	logger := cfg.Logger
	if cfg.DatabaseURL == "" {
		return SlowReport{}, errors.New("bench: DatabaseURL is required")
	}
	rep := SlowReport{Config: cfg}
	rep.Config.Logger = nil
	timeout := 2*time.Minute + cfg.UpstreamLatency

	providers := newH2CTransport(timeout)
	st, err := startStack(ctx, stackConfig{DatabaseURL: cfg.DatabaseURL, Keep: cfg.Keep, UpstreamLatency: cfg.UpstreamLatency,
		ProviderTransport: providers, MaxDBConns: cfg.MaxDBConns, Logger: logger})
	if err != nil {
		return SlowReport{}, err
	}
	defer func() { err = errors.Join(err, st.close(ctx)) }()

	body := []byte(requestBody)
	direct := &target{name: "direct", client: &http.Client{Transport: newH2CTransport(timeout), Timeout: timeout},
		url: st.up.baseURL + "/chat/completions", auth: "Bearer sk-bench", body: body, logger: logger}
	via := &target{name: "tollgate", client: &http.Client{Transport: newH2CTransport(timeout), Timeout: timeout},
		url: st.tollgateURL + "/v1/chat/completions", auth: "Bearer " + st.key, body: body, logger: logger}
	defer direct.client.CloseIdleConnections()
	defer via.client.CloseIdleConnections()

	logger.Info("bench slow: direct", "requests", cfg.Requests, "upstream_latency", cfg.UpstreamLatency)
	upConns := st.up.accepted.Load()
	if rep.Direct, err = slowPhase(ctx, cfg.Requests, direct, st.up, nil, nil, ""); err != nil {
		return SlowReport{}, err
	}
	rep.Direct.Connections = st.up.accepted.Load() - upConns
	rep.Direct.UpstreamConnections = rep.Direct.Connections

	logger.Info("bench slow: tollgate", "requests", cfg.Requests, "upstream_latency", cfg.UpstreamLatency)
	upConns, tgConns := st.up.accepted.Load(), st.accepted.Load()
	before := st.srv.Pool.Stat()
	rep.Pool.MaxConns = before.MaxConns()
	// Tollgate's own connection to the upstream is opened first too, as
	// the clients' are (see slowPhase): a deployment's is warm.
	if err := (&target{name: "tollgate's provider client", client: &http.Client{Transport: providers, Timeout: timeout}, url: st.up.baseURL}).prime(ctx); err != nil {
		return SlowReport{}, err
	}
	if rep.Tollgate, err = slowPhase(ctx, cfg.Requests, via, st.up, st.srv.Pool, &rep.Pool, cfg.HeapProfile); err != nil {
		return SlowReport{}, err
	}
	after := st.srv.Pool.Stat()
	rep.Pool.Acquires = after.AcquireCount() - before.AcquireCount()
	rep.Pool.Waited = after.EmptyAcquireCount() - before.EmptyAcquireCount()
	rep.Pool.AcquireWait = after.AcquireDuration() - before.AcquireDuration()
	rep.Tollgate.Connections = st.accepted.Load() - tgConns
	rep.Tollgate.UpstreamConnections = st.up.accepted.Load() - upConns

	if rep.Requested, rep.Recorded, err = countRecorded(ctx, st.dbURL); err != nil {
		return SlowReport{}, err
	}
	return rep, nil
}

// newH2CTransport is a client transport that speaks only unencrypted
// HTTP/2 (prior knowledge): thousands of requests share a connection.
func newH2CTransport(timeout time.Duration) *http.Transport {
	t := newTransport(1)
	t.ResponseHeaderTimeout = timeout
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	t.Protocols = &p
	// Notice a dead connection that carries thousands of requests.
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 15 * time.Second}
	return t
}

// slowPhase sends n requests to t at once and waits for every answer,
// sampling the process's peaks (and pool's, when not nil) meanwhile.
func slowPhase(ctx context.Context, n int, t *target, up *upstream, pool *pgxpool.Pool, ps *DBPool, heapProfile string) (SlowPhase, error) {
	// One request first opens the client's h2c connection: requests that
	// find no connection each dial their own (net/http's pool does not
	// share a dial in progress), so a burst on a cold client would open a
	// connection per request. Once one is up they share it, and dial again
	// only for streams beyond the server's per-connection limit.
	if err := t.prime(ctx); err != nil {
		return SlowPhase{}, err
	}
	runtime.GC() // the previous phase's garbage is not this one's peak
	up.resetPeak()
	t.logged.Store(0)
	ph := SlowPhase{Requests: n, Errors: map[string]int{}}

	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := newSampler()
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for {
			s.sample(&ph)
			if heapProfile != "" && up.peak.Load() >= int64(n) {
				writeHeapProfile(heapProfile, t.logger)
				heapProfile = ""
			}
			if pool != nil {
				st := pool.Stat()
				ps.PeakAcquired = max(ps.PeakAcquired, st.AcquiredConns())
				ps.PeakTotal = max(ps.PeakTotal, st.TotalConns())
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, n)
		wg        sync.WaitGroup
	)
	gate := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-gate
			d, kind := t.doSlow(ctx)
			mu.Lock()
			defer mu.Unlock()
			if kind == "" {
				latencies = append(latencies, d)
			} else {
				ph.Errors[kind]++
			}
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	ph.Elapsed = time.Since(start)
	close(stop)
	<-sampled
	ph.UpstreamPeak = up.peak.Load()
	if err := ctx.Err(); err != nil {
		return SlowPhase{}, fmt.Errorf("bench: slow phase (%s): %w", t.name, err)
	}
	ph.Succeeded = len(latencies)
	if len(latencies) > 0 {
		slices.Sort(latencies)
		ph.P50, ph.P99, ph.Max = percentile(latencies, 50), percentile(latencies, 99), latencies[len(latencies)-1]
	}
	return ph, nil
}

// prime opens t's connection with a cheap GET (its status does not matter).
func (t *target) prime(ctx context.Context) error {
	u, err := url.Parse(t.url)
	if err != nil {
		return fmt.Errorf("bench: prime %s: %w", t.name, err)
	}
	u.Path = "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("bench: prime %s: %w", t.name, err)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("bench: prime %s: %w", t.name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// doSlow sends one chat completion; kind is "" on success (HTTP 200, the
// body read) and names the failure otherwise.
func (t *target) doSlow(ctx context.Context) (time.Duration, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		t.logFailure(0, err)
		return 0, "bench_request"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", t.auth)
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		t.logFailure(time.Since(start), err)
		return time.Since(start), errorKind(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	elapsed := time.Since(start)
	switch {
	case err != nil:
		t.logFailure(elapsed, fmt.Errorf("read response: %w", err))
		return elapsed, "read_" + errorKind(err)
	case resp.StatusCode == http.StatusAccepted:
		t.logFailure(elapsed, errors.New("HTTP 202: answered with a job at the response deadline"))
		return elapsed, "accepted_202"
	case resp.StatusCode != http.StatusOK:
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e) // a body that is not an OpenAI error still counts by status
		t.logFailure(elapsed, fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, raw))
		kind := "http_" + strconv.Itoa(resp.StatusCode)
		if e.Error.Code != "" {
			kind += "_" + e.Error.Code
		}
		return elapsed, kind
	}
	return elapsed, ""
}

// errorKind names a transport error for the report's error counts.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_open_files"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection_reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_ephemeral_port"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "transport"
}

// sampler reads the process's goroutines, heap and resident memory.
type sampler struct {
	m []metrics.Sample
}

func newSampler() *sampler {
	return &sampler{m: []metrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}}
}

func (s *sampler) sample(ph *SlowPhase) {
	metrics.Read(s.m)
	if v := s.m[0].Value; v.Kind() == metrics.KindUint64 {
		ph.PeakGoroutines = max(ph.PeakGoroutines, int(v.Uint64()))
	}
	if v := s.m[1].Value; v.Kind() == metrics.KindUint64 {
		ph.PeakHeapBytes = max(ph.PeakHeapBytes, v.Uint64())
	}
	ph.PeakRSSBytes = max(ph.PeakRSSBytes, residentBytes())
}

// residentBytes is the process's resident set size from /proc (Linux);
// 0 where that cannot be read.
func residentBytes() uint64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

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
	fmt.Fprintf(&b, "machine: %s/%s, %d CPUs, GOMAXPROCS %d, %s; client, Tollgate and upstream in one process, h2c between them\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trequests\tok\tfailed\twall\tp50\tp99\tmax\tupstream peak\tconns in\tconns to upstream\tpeak goroutines\tpeak heap\tpeak RSS\t")
	row := func(name string, p SlowPhase) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t\n", name, p.Requests, p.Succeeded, p.Requests-p.Succeeded,
			secs(p.Elapsed), secs(p.P50), secs(p.P99), secs(p.Max), p.UpstreamPeak, p.Connections, p.UpstreamConnections,
			p.PeakGoroutines, mib(p.PeakHeapBytes), mib(p.PeakRSSBytes))
	}
	row("direct", r.Direct)
	row("tollgate", r.Tollgate)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
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

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func mib(n uint64) string { return fmt.Sprintf("%.0fMiB", float64(n)/(1<<20)) }
