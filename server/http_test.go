package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPServerServesHTTP1AndH2C: Tollgate's HTTP server answers HTTP/1.1
// and h2c (prior knowledge) on one port, and holds more concurrent h2c
// requests than net/http's default 250 streams on one connection, all
// in flight at once.
func TestHTTPServerServesHTTP1AndH2C(t *testing.T) {
	t.Parallel()
	const n = 300
	var inflight, peak atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			cur := inflight.Add(1)
			defer inflight.Add(-1)
			for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
			}
			if cur == n {
				once.Do(func() { close(all) })
			}
			select { // a bound, not a timing: a lost request fails the peak below
			case <-all:
			case <-time.After(time.Minute):
			}
		}
		_, _ = io.WriteString(w, r.Proto)
	})
	srv, err := newHTTPServer(handler, slog.New(slog.DiscardHandler), DefaultHTTP2MaxConcurrentStreams)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	base := "http://" + ln.Addr().String()

	get := func(c *http.Client, path string) (string, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	h1 := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(h1.CloseIdleConnections)
	if proto, err := get(h1, "/"); err != nil || proto != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 client: %q, %v", proto, err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	t.Cleanup(h2c.CloseIdleConnections)
	if proto, err := get(h2c, "/"); err != nil || proto != "HTTP/2.0" {
		t.Fatalf("h2c client: %q, %v", proto, err)
	}
	before := accepted.Load()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range n {
		wg.Go(func() {
			if proto, err := get(h2c, "/wait"); err != nil || proto != "HTTP/2.0" {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if f, pk, conns := failed.Load(), peak.Load(), accepted.Load()-before; f != 0 || pk != n || conns != 0 {
		t.Errorf("%d h2c requests: %d failed, %d in flight at once, %d new connections; want 0, %d, 0", n, f, pk, conns, n)
	}
}
