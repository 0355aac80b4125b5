package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"
)

// The slow mode's commands to its Tollgate child, one a line on its stdin.
const (
	// slowStart opens Tollgate's connection to the upstream (a
	// deployment's is warm) and starts measuring; the child answers
	// Started.
	slowStart = "start"
	// slowHeap writes the heap profile (childSpec.HeapProfile) now.
	slowHeap = "heap"
	// slowStop stops measuring; the child answers Slow.
	slowStop = "stop"
)

// slowStats is what the slow mode's Tollgate child measured of itself
// between slowStart and slowStop.
type slowStats struct {
	Peaks Peaks  `json:"peaks"`
	Pool  DBPool `json:"pool"`
	// Accepted counts the connections Tollgate's HTTP server accepted.
	Accepted int64 `json:"accepted"`
	// Runtime is the Go runtime's memory settings in Tollgate's process.
	Runtime GoRuntime `json:"runtime"`
}

// GoRuntime is a process's Go memory settings.
type GoRuntime struct {
	// MemoryLimit is the soft memory limit (GOMEMLIMIT,
	// runtime/debug.SetMemoryLimit); math.MaxInt64 when there is none.
	MemoryLimit int64 `json:"memory_limit"`
	// GOGC is the GOGC environment variable ("" = the default, 100).
	GOGC string `json:"gogc,omitempty"`
}

// goRuntime reads this process's Go memory settings.
func goRuntime() GoRuntime {
	return GoRuntime{MemoryLimit: debug.SetMemoryLimit(-1), GOGC: os.Getenv("GOGC")}
}

// slowTimeout bounds a slow-mode request of an upstream thinking latency.
func slowTimeout(latency time.Duration) time.Duration { return 2*time.Minute + latency }

// serveSlowTollgate runs Tollgate as the slow mode configures it (h2c to
// the upstream, a pool of s.MaxDBConns) until ctx ends, measuring its own
// process on the parent's commands.
func serveSlowTollgate(ctx context.Context, s childSpec, logger *slog.Logger, out *messageWriter, commands <-chan string) error {
	cfg, err := tollgateConfig(s.UpstreamURL, s.DatabaseURL, s.AdminToken, s.UpstreamLatency, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench child: listen: %w", err)
	}
	cl := &countingListener{Listener: ln}
	timeout := slowTimeout(s.UpstreamLatency)
	providers := newH2CTransport(timeout)
	srv, err := startTollgate(ctx, cfg, logger, providers, cl, s.MaxDBConns)
	if err != nil {
		return err
	}
	defer providers.CloseIdleConnections()
	err = out.send(childMessage{Addr: srv.Addr})
	var m *meter
	var accepted int64
	for err == nil {
		select {
		case <-ctx.Done():
			return closeTollgate(ctx, srv, nil)
		case err = <-srv.Err():
		case cmd := <-commands:
			switch cmd {
			case slowStart:
				up := &target{name: "tollgate's provider client", client: &http.Client{Transport: providers, Timeout: timeout}, url: s.UpstreamURL}
				if err = up.prime(ctx); err == nil {
					accepted, m = cl.accepted.Load(), startMeter(srv.Pool, nil)
					err = out.send(childMessage{Started: true})
				}
			case slowHeap:
				writeHeapProfile(s.HeapProfile, logger)
			case slowStop:
				if m == nil {
					err = errors.New("bench child: stop before start")
					break
				}
				st := slowStats{Accepted: cl.accepted.Load() - accepted, Runtime: goRuntime()}
				st.Peaks, st.Pool = m.finish()
				m = nil
				err = out.send(childMessage{Slow: &st})
			default:
				err = fmt.Errorf("bench child: unknown command %q", cmd)
			}
		}
	}
	return closeTollgate(ctx, srv, err)
}
