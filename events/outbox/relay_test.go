package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

func newStore(t *testing.T) *pgstore.Store {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	s, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEvent(t *testing.T, account string, n int) events.Envelope {
	t.Helper()
	e, err := events.New(events.StreamAPIKey+fmt.Sprintf("key_%s_%d", account, n),
		events.APIKeyIssued{KeyID: fmt.Sprintf("key_%d", n), AccountID: account, Name: "k", KeyHash: uuid.NewString()},
		events.Metadata{AccountID: account, Actor: "admin"}, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func appendEvents(t *testing.T, s *pgstore.Store, n, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			account := fmt.Sprintf("acc_%d", w)
			stream := events.StreamAccount + account
			for i := range n / workers {
				if _, err := s.Append(context.Background(), stream, int64(i), newEvent(t, account, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// stored returns the first n committed events in the store's global order.
// The store reads below the oldest running transaction of the whole
// PostgreSQL cluster, and other tests write to it concurrently, so a
// committed event may take a moment to become readable: stored waits.
func stored(t testing.TB, s *pgstore.Store, n int) []events.Envelope {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, _, err := s.ReadAll(context.Background(), pgstore.Cursor{}, 1_000_000, pgstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events readable, want %d", len(evs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// drain runs r until it has nothing left to relay, and returns how many
// events it relayed.
func drain(t *testing.T, r *outbox.Relay) int {
	t.Helper()
	total := 0
	for {
		n, err := r.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
}

// drainWant drains r until it relayed want events or 5 s passed, and
// returns how many it relayed: a read may stop below another database's
// transaction that ended between its snapshot and its look at the locks,
// so nothing left to relay is read again (bounded).
func drainWant(t *testing.T, r *outbox.Relay, want int) int {
	t.Helper()
	total := drain(t, r)
	for deadline := time.Now().Add(5 * time.Second); total < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		total += drain(t, r)
	}
	return total
}

func checkpoint(t *testing.T, s *pgstore.Store, name string) pgstore.Cursor {
	t.Helper()
	c, err := pgstore.LoadCheckpoint(context.Background(), s.Pool(), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func head(t *testing.T, s *pgstore.Store) pgstore.Cursor {
	t.Helper()
	c, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// 1. Every appended event reaches the bus in global order exactly as stored.
func TestRelayPublishesEveryEventInGlobalOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	busCfg, pub := sqlBus(t, s)
	reg := prometheus.NewRegistry()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic, BatchSize: 7, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := run(ctx, t, relay)

	// Appends from several writers at once, while the relay runs.
	const n = 120
	appendEvents(t, s, n, 6)
	want := stored(t, s, n)
	if len(want) != n {
		t.Fatalf("stored %d events, want %d", len(want), n)
	}

	ch := subscribe(ctx, t, busCfg, "test", bus.Topic)
	for i, w := range want {
		var m *message.Message
		select {
		case m = <-ch:
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("received %d of %d events", i, n)
		}
		got, err := bus.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if got.EventID != w.EventID || got.Position != w.Position || got.StreamID != w.StreamID ||
			got.StreamVersion != w.StreamVersion || got.Type != w.Type || got.SchemaVersion != w.SchemaVersion ||
			!got.OccurredAt.Equal(w.OccurredAt) || got.Metadata != w.Metadata || compact(t, got.Data) != compact(t, w.Data) {
			t.Fatalf("message %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
	// The relay saves its checkpoint after publishing, so a subscriber
	// can see the last message before the checkpoint moves: wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, h := checkpoint(t, s, relay.Name()), head(t, s)
		if c == h && metric(t, reg, "tollgate_outbox_lag_events") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %+v, head %+v", c, h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if relay.Name() != "outbox:"+bus.Topic {
		t.Fatalf("name %q", relay.Name())
	}
	if v := metric(t, reg, "tollgate_outbox_events_relayed_total"); v != n {
		t.Fatalf("relayed metric %v, want %d", v, n)
	}
	if v := metric(t, reg, "tollgate_outbox_lag_events"); v != 0 {
		t.Fatalf("lag %v at the head", v)
	}
}

// metric returns the value of the one counter or gauge named name on reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// compact returns raw JSON without insignificant space: PostgreSQL's jsonb
// prints data with spaces, the envelope's JSON encoding compacts it.
func compact(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// 2. A crash between publish and checkpoint re-publishes, never loses.
func TestRelayCrashBetweenPublishAndCheckpoint(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	appendEvents(t, s, 30, 3)
	want := stored(t, s, 30)

	pub := newRecorder()
	reg := prometheus.NewRegistry()
	// The first process publishes part of a batch and dies.
	pub.failAfter = 4
	first, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic, BatchSize: 10, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.RunOnce(context.Background()); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	if c := checkpoint(t, s, first.Name()); c != (pgstore.Cursor{}) {
		t.Fatalf("checkpoint moved to %+v after a failed publish", c)
	}
	if v := metric(t, reg, "tollgate_outbox_publish_errors_total"); v != 1 {
		t.Fatalf("publish errors %v", v)
	}
	// The next one publishes the whole batch and dies before the checkpoint.
	pub.failAfter = 10
	if _, err := first.RunOnce(context.Background()); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	if got := len(pub.ids()); got != 14 {
		t.Fatalf("%d messages reached the bus before the crashes, want 14", got)
	}

	// A fresh relay with a working publisher.
	pub.failAfter = -1
	second, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, second)

	seen := map[uuid.UUID]int{}
	for _, id := range pub.ids() {
		seen[id]++
	}
	for _, w := range want {
		if seen[w.EventID] == 0 {
			t.Fatalf("event %s at %d never reached the bus", w.EventID, w.Position)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d distinct events on the bus, %d stored", len(seen), len(want))
	}
	// After the re-publication, the bus holds the whole log in order.
	got := pub.ids()
	tail := got[len(got)-len(want):]
	for i, w := range want {
		if tail[i] != w.EventID {
			t.Fatalf("re-published stream out of order at %d", i)
		}
	}
	if c, h := checkpoint(t, s, second.Name()), head(t, s); c != h {
		t.Fatalf("checkpoint %+v, head %+v", c, h)
	}
}

// rawInsert inserts e in a transaction of its own and leaves it open.
func rawInsert(ctx context.Context, pool *pgxpool.Pool, e events.Envelope) (commit, rollback func() error, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
		VALUES ($1, $2, 1, $3, $4, $5, $6, $7::jsonb, '{}'::jsonb)`,
		e.EventID, e.StreamID, e.Type, e.SchemaVersion, e.OccurredAt, e.Metadata.AccountID, string(e.Data))
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, nil, err
	}
	return func() error { return tx.Commit(ctx) }, func() error { return tx.Rollback(ctx) }, nil
}

// 3. A transaction that commits late is waited for, never skipped.
func TestRelayWaitsForLateCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	appendEvents(t, s, 3, 1)
	stored(t, s, 3)
	pub := newRecorder()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic})
	if err != nil {
		t.Fatal(err)
	}
	if n := drainWant(t, relay, 3); n != 3 {
		t.Fatalf("relayed %d, want 3", n)
	}

	// The late transaction appends first, so it has the older
	// transaction id (appenders register before they write: see
	// migration 0007)...
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	insert := func(e events.Envelope, stream string, version int64) int64 {
		t.Helper()
		var pos int64
		if err := tx.QueryRow(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, $9::jsonb) RETURNING position`,
			e.EventID, stream, version, e.Type, e.SchemaVersion, e.OccurredAt, "acc_a", string(e.Data), `{"account_id":"acc_a"}`,
		).Scan(&pos); err != nil {
			t.Fatal(err)
		}
		return pos
	}
	lateFirst := newEvent(t, "acc_a", 1)
	insert(lateFirst, "account-acc_a", 1)
	// ...an event is appended and committed after it...
	early := newEvent(t, "acc_b", 1)
	appended, err := s.Append(ctx, "account-acc_b", 0, early)
	if err != nil {
		t.Fatal(err)
	}
	// ...and the late one inserts another event (a higher position) last.
	late := newEvent(t, "acc_a", 2)
	if latePos := insert(late, "account-acc_a", 2); latePos <= appended[0].Position {
		t.Fatalf("setup: late position %d not after %d", latePos, appended[0].Position)
	}

	before := checkpoint(t, s, relay.Name())
	if n := drain(t, relay); n != 0 {
		t.Fatalf("relayed %d events past an open transaction", n)
	}
	if c := checkpoint(t, s, relay.Name()); c != before {
		t.Fatalf("checkpoint moved past an open transaction: %+v -> %+v", before, c)
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	stored(t, s, 6)
	if n := drainWant(t, relay, 3); n != 3 {
		t.Fatalf("relayed %d after the commit, want 3", n)
	}
	ids := pub.ids()
	if len(ids) != 6 {
		t.Fatalf("%d messages, want 6", len(ids))
	}
	// Global order is by transaction: the late ones first.
	if ids[3] != lateFirst.EventID || ids[4] != late.EventID || ids[5] != early.EventID {
		t.Fatalf("after the commit got %v, want late %s, %s then early %s", ids[3:], lateFirst.EventID, late.EventID, early.EventID)
	}
	if c, h := checkpoint(t, s, relay.Name()), head(t, s); c != h {
		t.Fatalf("checkpoint %+v, head %+v", c, h)
	}
}

// 4. Nothing uncommitted is ever relayed.
func TestRelayNeverPublishesRolledBackEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	pub := newRecorder()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: s, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic})
	if err != nil {
		t.Fatal(err)
	}
	ghost := newEvent(t, "acc_ghost", 1)
	_, rollback, err := rawInsert(ctx, s.Pool(), ghost)
	if err != nil {
		t.Fatal(err)
	}
	if n := drain(t, relay); n != 0 {
		t.Fatalf("relayed %d uncommitted events", n)
	}
	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, s, 4, 2)
	stored(t, s, 4)
	if n := drainWant(t, relay, 4); n != 4 {
		t.Fatalf("relayed %d, want 4", n)
	}
	for _, id := range pub.ids() {
		if id == ghost.EventID {
			t.Fatal("a rolled-back event reached the bus")
		}
	}
}

func TestRelayConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (outbox.RelayConfig{}).Validate(); err == nil {
		t.Fatal("a relay without store and publisher is valid")
	}
	if _, err := outbox.NewRelay(outbox.RelayConfig{Publisher: bus.EventPublisher{Publisher: newRecorder()}, Topic: bus.Topic}); err == nil {
		t.Fatal("a relay without store was created")
	}
}
