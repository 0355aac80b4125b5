package server

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

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
	w.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// A synchronous completion can take minutes at the provider.
		WriteTimeout:   10 * time.Minute,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(w.logger.Handler(), slog.LevelWarn),
		// HTTP/1.1 and unencrypted HTTP/2 (h2c, prior knowledge) on the same
		// port: a client or proxy that speaks h2c multiplexes many slow
		// requests over a few connections (one file descriptor each) instead
		// of one connection per request in flight.
		Protocols: serverProtocols(),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: cmp.Or(w.opts.HTTP2MaxConcurrentStreams, DefaultHTTP2MaxConcurrentStreams)},
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
