package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// newTransport returns the transport every side of the bench uses: keep-alive
// on, enough idle connections for conc requests at once, timeouts on every step.
func newTransport(conc int) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never measure a proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          2*conc + 16,
		MaxIdleConnsPerHost:   conc + 8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// newClient returns a client for conc concurrent requests, each bounded by timeout.
func newClient(conc int, timeout time.Duration) *http.Client {
	return &http.Client{Transport: newTransport(conc), Timeout: timeout}
}

// target is one endpoint under measurement.
type target struct {
	name   string // "direct", "reference" or "tollgate"
	client *http.Client
	url    string
	auth   string // Authorization header value
	body   []byte
	// streamBody is the request of the streaming phase ("stream": true).
	streamBody []byte
	logger     *slog.Logger
	// logged bounds the failures logged, so a broken run does not flood the log.
	logged atomic.Int32
}

// outcome is one request's: its latency to the end of the answer, to the
// first server-sent event (streams only), and whether it succeeded.
type outcome struct {
	total, first time.Duration
	ok           bool
}

// post sends body to t.
func (t *target) post(ctx context.Context, body []byte, accept string) (*http.Response, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, time.Now(), err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	req.Header.Set("Authorization", t.auth)
	start := time.Now()
	resp, err := t.client.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		return nil, start, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(snippet))
	}
	return resp, start, err
}

// do sends one chat completion and reports its latency and whether it
// succeeded (HTTP 200 with its body read to the end).
func (t *target) do(ctx context.Context) outcome {
	resp, start, err := t.post(ctx, t.body, "application/json")
	if err != nil {
		return t.fail(start, err)
	}
	_, rerr := io.Copy(io.Discard, resp.Body)
	cerr := resp.Body.Close()
	if err := errors.Join(rerr, cerr); err != nil {
		return t.fail(start, fmt.Errorf("read response: %w", err))
	}
	return outcome{total: time.Since(start), ok: true}
}

// doStream sends one streamed chat completion and reports the time to its
// first event, to its end, and whether it succeeded: HTTP 200, ending
// with data: [DONE].
func (t *target) doStream(ctx context.Context) outcome {
	resp, start, err := t.post(ctx, t.streamBody, "text/event-stream")
	if err != nil {
		return t.fail(start, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var o outcome
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	lineStart, done := true, false
	for {
		line, err := br.ReadSlice('\n')
		if lineStart && bytes.HasPrefix(line, []byte("data:")) {
			if o.first == 0 {
				o.first = time.Since(start)
			}
			done = string(bytes.TrimSpace(line)) == "data: [DONE]"
		}
		lineStart = !errors.Is(err, bufio.ErrBufferFull)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && lineStart {
			return t.fail(start, fmt.Errorf("read stream: %w", err))
		}
	}
	if !done {
		return t.fail(start, errors.New("the stream did not end with data: [DONE]"))
	}
	o.total, o.ok = time.Since(start), true
	return o
}

// fail logs a request that failed after start.
func (t *target) fail(start time.Time, err error) outcome {
	elapsed := time.Since(start)
	t.logFailure(elapsed, err)
	return outcome{total: elapsed}
}

// logFailure logs one of the first failures of a phase.
func (t *target) logFailure(elapsed time.Duration, err error) {
	if t.logged.Add(1) <= 5 {
		t.logger.Warn("bench request failed", "target", t.name, "elapsed", elapsed, "error", err)
	}
}

// sample collects one phase's latencies of successful requests and its errors.
type sample struct {
	latencies, firsts []time.Duration
	errors            int
}

func (s *sample) add(o outcome) {
	if !o.ok {
		s.errors++
		return
	}
	s.latencies = append(s.latencies, o.total)
	if o.first > 0 {
		s.firsts = append(s.firsts, o.first)
	}
}

// stats summarizes the latencies to the end of the answers of a phase that
// took elapsed.
func (s *sample) stats(elapsed time.Duration) Stats { return summarize(s.latencies, s.errors, elapsed) }

// firstStats summarizes the latencies to the first event.
func (s *sample) firstStats(elapsed time.Duration) Stats {
	return summarize(s.firsts, s.errors, elapsed)
}

func summarize(latencies []time.Duration, errors int, elapsed time.Duration) Stats {
	st := Stats{Requests: len(latencies) + errors, Errors: errors, Elapsed: elapsed}
	if elapsed > 0 {
		st.Throughput = float64(st.Requests) / elapsed.Seconds()
	}
	if len(latencies) == 0 {
		return st
	}
	lat := slices.Clone(latencies)
	slices.Sort(lat)
	st.P50, st.P90, st.P99 = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
	st.Max = lat[len(lat)-1]
	return st
}

// percentile returns the nearest-rank p-th percentile of sorted, which is not empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

// interleaved sends n requests to each target one at a time, the targets
// taking turns and each round starting with the next one, so that all see
// the same machine conditions. A target's elapsed time is the sum of its
// latencies.
func interleaved(ctx context.Context, n int, targets []*target, do func(*target, context.Context) outcome) ([]sample, []time.Duration, error) {
	samples := make([]sample, len(targets))
	elapsed := make([]time.Duration, len(targets))
	for i := range samples {
		samples[i].latencies = make([]time.Duration, 0, n)
	}
	for i := range n {
		for j := range targets {
			if err := ctx.Err(); err != nil {
				return nil, nil, fmt.Errorf("light-load phase: %w", err)
			}
			k := (i + j) % len(targets)
			o := do(targets[k], ctx)
			samples[k].add(o)
			elapsed[k] += o.total
		}
	}
	return samples, elapsed, nil
}

// load sends n requests to t from conc workers at once.
func load(ctx context.Context, n, conc int, t *target) (Stats, error) {
	conc = max(min(conc, n), 1)
	var next atomic.Int64
	samples := make([]sample, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		s := &samples[w]
		s.latencies = make([]time.Duration, 0, n/conc+1)
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				s.add(t.do(ctx))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return Stats{}, fmt.Errorf("load phase (%s): %w", t.name, err)
	}
	var all sample
	for _, s := range samples {
		all.latencies = append(all.latencies, s.latencies...)
		all.errors += s.errors
	}
	return all.stats(elapsed), nil
}
