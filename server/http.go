package server

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/tollgate/tollgate/bus"
)

// DefaultHTTP2MaxConcurrentStreams is Options.HTTP2MaxConcurrentStreams'
// default: the project's target of 10,000 slow requests in flight fits in
// one h2c connection. A lower limit does not save resources (HTTP/1.1
// clients may open as many connections), and Go's client, past a
// connection's limit, dials a new connection per waiting request rather
// than sharing one, which brings back a socket per request. Each stream
// still passes authentication and admission control.
const DefaultHTTP2MaxConcurrentStreams = 10_000

// serveHTTP serves handler on Options.Listener or on Env.HTTPAddr.
func (w *wiring) serveHTTP(handler http.Handler) (err error) {
	ln := w.opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", w.cfg.Env.HTTPAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", w.cfg.Env.HTTPAddr, err)
		}
	}
	w.Addr = ln.Addr().String()
	if w.http, err = newHTTPServer(handler, w.logger, cmp.Or(w.opts.HTTP2MaxConcurrentStreams, DefaultHTTP2MaxConcurrentStreams)); err != nil {
		_ = ln.Close()
		return err
	}
	srv := w.http
	w.goRun("http", func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// newHTTPServer is Tollgate's HTTP server of handler: HTTP/1.1 and
// unencrypted HTTP/2 (h2c, prior knowledge) on the same port, so that a
// client or proxy that speaks h2c multiplexes many slow requests over a
// few connections (one file descriptor each) instead of one connection
// per request in flight, maxStreams of them on each.
//
// HTTP/2 is served by golang.org/x/net/http2 with its random write
// scheduler, which picks among the streams that have something to write.
// net/http's own (round-robin) scheduler walks every open stream of the
// connection for each frame it writes: with 10,000 slow requests on one
// connection that walk was a fifth of Tollgate's CPU (bench -slow).
// Tollgate's clients ask for no HTTP/2 priorities. x/net deprecates its
// server and custom schedulers in favour of net/http's, whose schedulers
// (round-robin, and x/net's RFC 9218 default) walk every open stream: use
// net/http's alone once one of them picks among the ready streams only.
func newHTTPServer(handler http.Handler, logger *slog.Logger, maxStreams int) (*http.Server, error) {
	if maxStreams <= 0 || maxStreams > math.MaxUint32 {
		return nil, fmt.Errorf("HTTP/2 concurrent streams must be between 1 and %d, got %d", uint32(math.MaxUint32), maxStreams)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// A synchronous completion can take minutes at the provider.
		WriteTimeout:   10 * time.Minute,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Protocols:      serverProtocols(),
		HTTP2:          &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
	}
	//lint:ignore SA1019 net/http's own HTTP/2 schedulers walk every open stream per frame (see above)
	h2 := &http2.Server{MaxConcurrentStreams: uint32(maxStreams), NewWriteScheduler: http2.NewRandomWriteScheduler}
	//lint:ignore SA1019 the only way to give net/http's server x/net's HTTP/2 with that scheduler
	if err := http2.ConfigureServer(srv, h2); err != nil {
		return nil, fmt.Errorf("configure HTTP/2: %w", err)
	}
	return srv, nil
}

// serverProtocols is HTTP/1.1 plus h2c.
func serverProtocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

func busName(c bus.Config) string {
	if c.Kafka() {
		return "kafka"
	}
	return "postgresql"
}
