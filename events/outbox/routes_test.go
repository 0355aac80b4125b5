package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
)

// jobRoute is the server's route of queued jobs to the workers' topic.
var jobRoute = []outbox.Route{{Topic: bus.JobsTopic, Match: bus.IsJob, Types: bus.JobTypes()}}

// storedJobs returns the ids of the queued jobs among the first n
// committed events, in the global order.
func storedJobs(t *testing.T, s *pgstore.Store, n int) []uuid.UUID {
	t.Helper()
	var out []uuid.UUID
	for _, e := range stored(t, s, n) {
		if bus.IsJob(e) {
			out = append(out, e.EventID)
		}
	}
	return out
}

// subscribe subscribes to topic in group on the bus of cfg, until the
// test ends.
func subscribe(ctx context.Context, t *testing.T, cfg bus.Config, group, topic string) <-chan *message.Message {
	t.Helper()
	sub, err := bus.NewSubscriber(cfg, group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// receiveIDs returns the ids of the next n messages of ch, acked.
func receiveIDs(ctx context.Context, t *testing.T, ch <-chan *message.Message, n int) []uuid.UUID {
	t.Helper()
	out := make([]uuid.UUID, 0, n)
	for len(out) < n {
		select {
		case m := <-ch:
			m.Ack()
			e, err := bus.FromMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e.EventID)
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages", len(out), n)
		}
	}
	return out
}

// waitCheckpointAtHead waits until the relay's checkpoint is the last
// event of the log and its lag gauge says 0.
func waitCheckpointAtHead(t *testing.T, s *pgstore.Store, relay *outbox.Relay, reg *prometheus.Registry) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, h := checkpoint(t, s, relay.Name()), head(t, s)
		if c == h && (reg == nil || metric(t, reg, "tollgate_outbox_lag_events") == 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %+v, head %+v", c, h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// On the PostgreSQL bus with routes only, the jobs reach the workers'
// topic in order, tollgate.events gets nothing (watermill-sql never even
// creates its table), and the checkpoint moves over the whole log, also
// over events that no route publishes.
func TestRelayRoutesOnlyOnThePostgreSQLBus(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	busCfg, pub := sqlBus(t, s)
	reg := prometheus.NewRegistry()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic,
		Routes: jobRoute, RoutesOnly: true, BatchSize: 3, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := run(ctx, t, relay)

	// Completions (one in ten a queued job) among other events.
	appendOthers(t, s, "acc_x", 30)
	jobs := appendCompletions(t, s, 40)
	appendOthers(t, s, "acc_y", 30)
	want := storedJobs(t, s, 60+5*40)
	if len(want) != jobs || jobs != 4 {
		t.Fatalf("%d jobs stored, %d appended", len(want), jobs)
	}

	ch := subscribe(ctx, t, busCfg, "tollgate-workers", bus.JobsTopic)
	if got := receiveIDs(ctx, t, ch, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("jobs topic carried %v, want %v", got, want)
	}
	waitCheckpointAtHead(t, s, relay, reg)

	// Only events no route publishes: the checkpoint still follows.
	appendOthers(t, s, "acc_z", 6)
	stored(t, s, 60+5*40+6)
	waitCheckpointAtHead(t, s, relay, reg)
	stop()

	var eventsTable *string
	if err := s.Pool().QueryRow(ctx, `SELECT to_regclass('"watermill_tollgate.events"')::text`).Scan(&eventsTable); err != nil {
		t.Fatal(err)
	}
	if eventsTable != nil {
		t.Fatalf("the bus has a table %s for %s", *eventsTable, bus.Topic)
	}
	var onJobs int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM "watermill_tollgate.jobs"`).Scan(&onJobs); err != nil {
		t.Fatal(err)
	}
	if onJobs != jobs {
		t.Fatalf("%d messages on %s, want the %d jobs", onJobs, bus.JobsTopic, jobs)
	}
	if v := metric(t, reg, "tollgate_outbox_events_relayed_total"); v != float64(jobs) {
		t.Fatalf("relayed metric %v, want %d", v, jobs)
	}
}

// appendOthers appends n events of account, none of them a job, each in
// a stream of its own.
func appendOthers(t *testing.T, s *pgstore.Store, account string, n int) {
	t.Helper()
	for i := range n {
		e := newEvent(t, account, i)
		if _, err := s.Append(context.Background(), e.StreamID, 0, e); err != nil {
			t.Fatal(err)
		}
	}
}

// queuedJob returns a queued completion.requested of its own stream.
func queuedJob(t *testing.T, id string) events.Envelope {
	t.Helper()
	e, err := events.New(events.StreamCompletion+id, events.CompletionRequested{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeAsync, Request: json.RawMessage(`{"messages":[]}`),
	}, events.Metadata{AccountID: "acc_1"}, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Routes only keeps publish-then-checkpoint: a failed publish leaves the
// checkpoint, a crash after publishing publishes again, an open
// transaction holding a job holds the checkpoint back below it even with
// later events committed, and a rolled-back job is never published.
func TestRelayRoutesOnlyCrashLateCommitAndRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	jobs := appendCompletions(t, s, 20)
	want := storedJobs(t, s, 5*20)
	pub := newRecorder()
	relay := func() *outbox.Relay {
		r, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic, Routes: jobRoute, RoutesOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := relay()
	pub.failAfter = 0
	if _, err := first.RunOnce(ctx); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	if c := checkpoint(t, s, first.Name()); c != (pgstore.Cursor{}) {
		t.Fatalf("checkpoint moved to %+v after a failed publish", c)
	}
	pub.failAfter = jobs // publishes them all, then fails: a crash before the checkpoint
	if _, err := first.RunOnce(ctx); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	pub.failAfter = -1
	second := relay()
	drainWant(t, second, 20)
	if got := pub.idsOn(bus.JobsTopic); fmt.Sprint(got) != fmt.Sprint(append(want, want...)) {
		t.Fatalf("jobs published %v, want %v twice", got, want)
	}
	if len(pub.ids()) != 0 {
		t.Fatalf("%d events published to %s", len(pub.ids()), bus.Topic)
	}
	at := checkpoint(t, s, second.Name())
	if at != head(t, s) {
		t.Fatalf("checkpoint %+v, head %+v", at, head(t, s))
	}

	// An open transaction with a job, then events committed after it.
	late, ghost := queuedJob(t, "chatcmpl-late"), queuedJob(t, "chatcmpl-ghost")
	commit, abort, err := rawInsert(ctx, s.Pool(), late)
	if err != nil {
		t.Fatal(err)
	}
	defer abort() //nolint:errcheck // committed below, unless the test fails first
	_, rollback, err := rawInsert(ctx, s.Pool(), ghost)
	if err != nil {
		t.Fatal(err)
	}
	defer rollback() //nolint:errcheck // rolled back below, unless the test fails first
	appendOthers(t, s, "acc_x", 4)
	for range 3 {
		if n := drain(t, second); n != 0 {
			t.Fatalf("read %d events past an open transaction", n)
		}
		if c := checkpoint(t, s, second.Name()); c != at {
			t.Fatalf("checkpoint moved past an open transaction: %+v -> %+v", at, c)
		}
	}
	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	stored(t, s, 5*20+1+4)
	drainWant(t, second, 1)
	waitCheckpointAtHead(t, s, second, nil)
	got := pub.idsOn(bus.JobsTopic)
	if len(got) != 2*len(want)+1 || got[len(got)-1] != late.EventID {
		t.Fatalf("after the commit the jobs topic has %v; want the late job %s last, once, and never %s", got, late.EventID, ghost.EventID)
	}
}

// On Kafka the relay publishes every event to tollgate.events (analysts
// read it) and the jobs to tollgate.jobs as well.
func TestRelayPublishesAllOnKafka(t *testing.T) {
	t.Parallel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, bus.Topic, bus.JobsTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	busCfg := bus.Config{KafkaBrokers: cluster.ListenAddrs()}
	pub, err := bus.NewPublisher(busCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	s := newStore(t)
	jobs := appendCompletions(t, s, 10)
	all := stored(t, s, 5*10)
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic, Routes: jobRoute})
	if err != nil {
		t.Fatal(err)
	}
	if n := drainWant(t, relay, len(all)); n != len(all) {
		t.Fatalf("relayed %d of %d", n, len(all))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for topic, want := range map[string]int{bus.Topic: len(all), bus.JobsTopic: jobs} {
		ch := subscribe(ctx, t, busCfg, "test-"+topic, topic)
		got := map[uuid.UUID]bool{}
		for _, id := range receiveIDs(ctx, t, ch, want) {
			got[id] = true
		}
		for _, e := range all {
			if got[e.EventID] != (topic == bus.Topic || bus.IsJob(e)) {
				t.Fatalf("%s: event %s (%s) published %v", topic, e.EventID, e.Type, got[e.EventID])
			}
		}
	}
	if c, h := checkpoint(t, s, relay.Name()), head(t, s); c != h {
		t.Fatalf("checkpoint %+v, head %+v", c, h)
	}
}
