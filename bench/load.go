package bench

import (
	"bytes"
	"context"
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
	name   string // "direct" or "tollgate"
	client *http.Client
	url    string
	auth   string // Authorization header value
	body   []byte
	logger *slog.Logger
	// logged bounds the failures logged, so a broken run does not flood the log.
	logged atomic.Int32
}

// do sends one chat completion and reports its latency and whether it
// succeeded (HTTP 200 with its body read to the end).
func (t *target) do(ctx context.Context) (time.Duration, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		t.fail(0, err)
		return 0, false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", t.auth)
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		t.fail(time.Since(start), err)
		return time.Since(start), false
	}
	var snippet []byte
	if resp.StatusCode != http.StatusOK {
		snippet, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
	}
	_, rerr := io.Copy(io.Discard, resp.Body)
	cerr := resp.Body.Close()
	elapsed := time.Since(start)
	switch {
	case resp.StatusCode != http.StatusOK:
		t.fail(elapsed, fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet))
		return elapsed, false
	case rerr != nil:
		t.fail(elapsed, fmt.Errorf("read response: %w", rerr))
		return elapsed, false
	case cerr != nil:
		t.fail(elapsed, fmt.Errorf("close response: %w", cerr))
		return elapsed, false
	}
	return elapsed, true
}

func (t *target) fail(elapsed time.Duration, err error) {
	if t.logged.Add(1) <= 5 {
		t.logger.Warn("bench request failed", "target", t.name, "elapsed", elapsed, "error", err)
	}
}

// sample collects one phase's latencies of successful requests and its errors.
type sample struct {
	latencies []time.Duration
	errors    int
}

func (s *sample) add(d time.Duration, ok bool) {
	if ok {
		s.latencies = append(s.latencies, d)
	} else {
		s.errors++
	}
}

// stats summarizes s over a phase that took elapsed.
func (s *sample) stats(elapsed time.Duration) Stats {
	st := Stats{Requests: len(s.latencies) + s.errors, Errors: s.errors, Elapsed: elapsed}
	if elapsed > 0 {
		st.Throughput = float64(st.Requests) / elapsed.Seconds()
	}
	if len(s.latencies) == 0 {
		return st
	}
	lat := slices.Clone(s.latencies)
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

// interleaved sends n requests to each of a and b one at a time, alternating
// which goes first, so both see the same machine conditions.
func interleaved(ctx context.Context, n int, a, b *target) (Stats, Stats, error) {
	var sa, sb sample
	sa.latencies = make([]time.Duration, 0, n)
	sb.latencies = make([]time.Duration, 0, n)
	var ea, eb time.Duration
	for i := range n {
		if err := ctx.Err(); err != nil {
			return Stats{}, Stats{}, fmt.Errorf("light-load phase: %w", err)
		}
		first, second := a, b
		if i%2 == 1 {
			first, second = b, a
		}
		for _, t := range []*target{first, second} {
			d, ok := t.do(ctx)
			if t == a {
				sa.add(d, ok)
				ea += d
			} else {
				sb.add(d, ok)
				eb += d
			}
		}
	}
	return sa.stats(ea), sb.stats(eb), nil
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
