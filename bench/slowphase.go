package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

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
// sampling this process's peaks meanwhile (and calling onSample, when not
// nil, after each sample).
func slowPhase(ctx context.Context, n int, t *target, up *upstream, onSample func()) (SlowPhase, error) {
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
	m := startMeter(nil, onSample)
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
	ph.Bench, _ = m.finish()
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
