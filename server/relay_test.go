package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/server"
)

// What the relay publishes follows the bus: on the PostgreSQL bus only
// the jobs (watermill-sql never creates a table for tollgate.events) unless
// TOLLGATE_BUS_PUBLISH=all; on Kafka every event. Either way a queued job
// reaches a worker and the relay's checkpoint reaches the end of the log.
func TestRelayPublishesWhatTheBusNeeds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, publish string
		kafka, all    bool
	}{
		{"postgresql", "", false, false},
		{"postgresql publish all", "all", false, true},
		{"kafka", "", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{"TOLLGATE_BUS_PUBLISH": c.publish}
			if c.kafka {
				cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, bus.Topic, bus.JobsTopic, bus.DeadLetterTopic))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(cluster.Close)
				vars["TOLLGATE_KAFKA_BROKERS"] = cluster.ListenAddrs()[0]
			}
			srv, e := startServer(t, llmtest.NewUpstream(t, 0).URL, "", vars)
			key := e.key("acme")
			st, job := e.do("POST", "/v1/chat/completions", key, map[string]any{"model": "m", "messages": []any{map[string]any{"role": "user", "content": "hi"}}}, "Prefer", "respond-async")
			if st != 202 {
				t.Fatalf("async request: %d %v", st, job)
			}
			if st, got := e.do("GET", "/v1/jobs/"+job["id"].(string)+"?wait=30s", key, nil); st != 200 || got["status"] != "succeeded" {
				t.Fatalf("the job did not reach a worker: %d %v", st, got)
			}
			ctx := context.Background()
			eventually(t, "relay checkpoint at the head", func() error {
				c, err := pgstore.LoadCheckpoint(ctx, srv.Pool, "outbox:"+bus.Topic)
				if err != nil {
					return err
				}
				if h, err := srv.Store.Head(ctx); err != nil || c != h {
					return fmt.Errorf("checkpoint %+v, head %+v (%v)", c, h, err)
				}
				return nil
			})
			var stored int
			if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if c.kafka {
				kafkaEvents(t, vars["TOLLGATE_KAFKA_BROKERS"], stored)
				return
			}
			var table *string
			var onEvents, onJobs int
			if err := srv.Pool.QueryRow(ctx, `SELECT to_regclass('"watermill_tollgate.events"')::text`).Scan(&table); err != nil {
				t.Fatal(err)
			}
			if table != nil {
				if err := srv.Pool.QueryRow(ctx, `SELECT count(DISTINCT uuid) FROM "watermill_tollgate.events"`).Scan(&onEvents); err != nil {
					t.Fatal(err)
				}
			}
			if err := srv.Pool.QueryRow(ctx, `SELECT count(DISTINCT uuid) FROM "watermill_tollgate.jobs"`).Scan(&onJobs); err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: stored, false: 0}[c.all]; onEvents != want || (!c.all && table != nil) || onJobs != 1 {
				t.Fatalf("%s holds %d events (table %v), %s %d; want %d of the %d stored and the one job", bus.Topic, onEvents, table != nil, bus.JobsTopic, onJobs, want, stored)
			}
		})
	}
}

// startServer starts every role on the config of llmtest.ConfigYAML
// (upstream at upstreamURL, extraYAML added) with vars, a database of its
// own and an admin token as its environment.
func startServer(t *testing.T, upstreamURL, extraYAML string, vars map[string]string) (*server.Server, *jobsEnv) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(llmtest.ConfigYAML(upstreamURL, "1", "2", extraYAML)), 0o600); err != nil {
		t.Fatal(err)
	}
	vars["TOLLGATE_DATABASE_URL"] = pgtest.NewDatabase(t)
	vars["TOLLGATE_ADMIN_TOKEN"] = "admin-token-for-server-tests"
	getenv := func(k string) string { return vars[k] }
	cfg, err := config.Load(path, getenv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), server.Options{
		Config: cfg, Roles: server.AllRoles(), Listener: ln, Getenv: getenv,
		Logger: slog.New(slog.DiscardHandler), BusPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return srv, &jobsEnv{t: t, base: "http://" + srv.Addr, admin: vars["TOLLGATE_ADMIN_TOKEN"]}
}

// kafkaEvents reads tollgate.events from the start as an analyst would,
// until it has seen want distinct events.
func kafkaEvents(t *testing.T, broker string, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub, err := bus.NewSubscriber(bus.Config{KafkaBrokers: []string{broker}}, "analysts")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < want {
		select {
		case m := <-ch:
			m.Ack()
			seen[m.UUID] = true
		case <-ctx.Done():
			t.Fatalf("%s: %d of the %d stored events", bus.Topic, len(seen), want)
		}
	}
}
