package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/server"
)

// rebuildSchema is where the rebuild phase rebuilds the read models, beside
// the live ones in the bench's database.
const rebuildSchema = "bench_rebuild"

// rebuildBatch is `tollgate project rebuild`'s default -batch.
const rebuildBatch = 5000

// RunChild runs the child process a spec (ChildEnv's value) describes:
// Tollgate (as the bench or its slow mode configures it) or the reference
// proxy, serving until stdin ends, or the
// rebuild, run when "go" arrives on stdin. It reports on stdout (one JSON
// object a line) and logs to stderr. The bench's parent process starts it
// through Config.ChildCommand: `tollgate bench` re-executes itself, a
// test its test binary.
func RunChild(ctx context.Context, spec string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return fmt.Errorf("bench child: spec: %w", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		level = slog.LevelWarn
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("bench_child", s.Role)
	stop, err := StartProfiles(s.CPUProfile, s.BlockProfile)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stop()) }()

	// The parent closes stdin to stop the child; it closes too when the
	// parent dies, so a child never outlives its bench.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	commands := make(chan string, 16)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case commands <- sc.Text():
			default:
			}
		}
	}()
	out := &messageWriter{enc: json.NewEncoder(stdout)}
	switch s.Role {
	case roleTollgate:
		return serveTollgate(ctx, s, logger, out)
	case roleSlowTollgate:
		return serveSlowTollgate(ctx, s, logger, out, commands)
	case roleReference:
		return serveReference(ctx, s, logger, out)
	case roleRebuild:
		return runRebuild(ctx, s, logger, out, commands)
	}
	return fmt.Errorf("bench child: unknown role %q", s.Role)
}

// messageWriter writes a child's messages, one JSON object a line.
type messageWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *messageWriter) send(m childMessage) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(m); err != nil {
		return fmt.Errorf("bench child: report: %w", err)
	}
	return nil
}

// serveTollgate runs Tollgate with every role, configured as the bench
// configures it, until ctx ends.
func serveTollgate(ctx context.Context, s childSpec, logger *slog.Logger, out *messageWriter) error {
	cfg, err := tollgateConfig(s.UpstreamURL, s.DatabaseURL, s.AdminToken, s.UpstreamLatency, s.KafkaBrokers)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench child: listen: %w", err)
	}
	srv, err := startTollgate(ctx, cfg, logger, newTransport(s.Concurrency), ln, 0)
	if err != nil {
		return err
	}
	err = out.send(childMessage{Addr: srv.Addr})
	if err == nil {
		select {
		case <-ctx.Done():
		case err = <-srv.Err():
		}
	}
	return closeTollgate(ctx, srv, err)
}

// closeTollgate stops srv (within 30 s, even when ctx has ended) and
// returns err joined with how that went.
func closeTollgate(ctx context.Context, srv *server.Server, err error) error {
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return errors.Join(err, srv.Close(closeCtx))
}

// runRebuild does what `tollgate project rebuild` does on the bench's
// database once "go" arrives: rebuild the read models from the whole log
// beside the live ones, report, then compare them with the live ones.
func runRebuild(ctx context.Context, s childSpec, logger *slog.Logger, out *messageWriter, commands <-chan string) error {
	cfg, err := tollgateConfig(s.UpstreamURL, s.DatabaseURL, s.AdminToken, s.UpstreamLatency, s.KafkaBrokers)
	if err != nil {
		return err
	}
	pool, err := server.OpenDatabase(ctx, s.DatabaseURL, 4) // as the command does
	if err != nil {
		return fmt.Errorf("bench child: %w", err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool, nil)
	if err != nil {
		return fmt.Errorf("bench child: %w", err)
	}
	if err := out.send(childMessage{Ready: true}); err != nil {
		return err
	}
	select {
	case <-commands:
	case <-ctx.Done():
		return nil
	}
	stats, err := projections.Rebuild(ctx, pool, store, rebuildSchema, rebuildBatch, server.ReadModels(cfg), logger)
	if err != nil {
		return fmt.Errorf("bench child: %w", err)
	}
	if err := out.send(childMessage{Rebuilt: &rebuilt{Events: stats.Events, Elapsed: stats.Elapsed}}); err != nil {
		return err
	}
	diffs, err := projections.Compare(ctx, pool, projections.LiveSchema, rebuildSchema)
	if err != nil {
		return fmt.Errorf("bench child: %w", err)
	}
	if err := out.send(childMessage{Compared: true, Diffs: diffs}); err != nil {
		return err
	}
	<-ctx.Done() // the parent samples the CPU, then stops the child
	return nil
}
