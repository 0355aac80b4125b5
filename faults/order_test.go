package faults

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/server"
)

// orderStreams × orderVersions events, one transaction each, appended
// round robin so every stream's versions are spread over the backlog.
const (
	orderStreams  = 150
	orderVersions = 6
	orderBatch    = 100
)

// agedStore is a migrated store on a private cluster whose transaction
// ids are just below 10^9, holding a backlog of single-event transactions
// that crosses that power of ten, several batches long.
type agedStore struct {
	store *pgstore.Store
	pool  *pgxpool.Pool
	all   []events.Envelope // in append order
}

func newAgedStore(t *testing.T) *agedStore {
	t.Helper()
	ctx := context.Background()
	c := pgtest.StartCluster(t, pgtest.ClusterOptions{NextXID: 1_000_000_000 - 400})
	pool, err := pgxpool.New(ctx, c.CreateDatabase("tollgate"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &agedStore{store: s, pool: pool}
	for v := int64(1); v <= orderVersions; v++ {
		for i := range orderStreams {
			acc := fmt.Sprintf("acc_%03d", i)
			e, err := events.New(events.StreamAccount+acc, events.BillingWebhookReceived{
				StripeEventID: fmt.Sprintf("evt_%s_%d", acc, v), StripeEventType: "invoice.paid", AccountID: acc, Outcome: "recorded",
			}, events.Metadata{AccountID: acc, Actor: "test"}, time.Now(), "")
			if err != nil {
				t.Fatal(err)
			}
			out, err := s.Append(ctx, e.StreamID, v-1, e)
			if err != nil {
				t.Fatal(err)
			}
			a.all = append(a.all, out[0])
		}
	}
	var first, last uint64
	if err := pool.QueryRow(ctx, `SELECT min(transaction_id)::text::bigint, max(transaction_id)::text::bigint FROM events`).Scan(&first, &last); err != nil {
		t.Fatal(err)
	}
	if first >= 1_000_000_000 || last < 1_000_000_000 {
		t.Fatalf("setup: backlog spans transaction ids %d..%d, want it to cross 10^9", first, last)
	}
	return a
}

// recordingPublisher keeps what the relay published.
type recordingPublisher struct {
	mu  sync.Mutex
	ids []string
}

func (p *recordingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.ids = append(p.ids, m.UUID)
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// The global order is numeric: on a store whose transaction ids cross a
// power of ten inside a backlog of many batches, the relay publishes every
// event once and in append order, the projector applies every stream to
// its last version, the lag reads zero and the head is the last event.
// (With text order, 1000000000 sorted before 999999999: the relay skipped
// events and the projector stopped at a gap.)
func TestGlobalOrderAcrossPowerOfTen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newAgedStore(t)

	pub := &recordingPublisher{}
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: a.store, Publisher: bus.EventPublisher{Publisher: pub}, Topic: bus.Topic, BatchSize: orderBatch})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := relay.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if len(pub.ids) != len(a.all) {
		t.Fatalf("relay published %d of %d events", len(pub.ids), len(a.all))
	}
	for i, e := range a.all {
		if pub.ids[i] != e.EventID.String() {
			t.Fatalf("relay message %d is %s, want %s (position %d)", i, pub.ids[i], e.EventID, e.Position)
		}
	}

	cfg := config.Default()
	set, err := projections.NewSet(a.pool, projections.LiveSchema, nil, nil, server.ReadModels(cfg)(projections.LiveSchema)...)
	if err != nil {
		t.Fatal(err)
	}
	follower, err := projections.NewFollower(projections.FollowerConfig{Set: set, Store: a.store, BatchSize: orderBatch})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := follower.RunOnce(ctx)
		if err != nil {
			t.Fatalf("projector: %v", err)
		}
		if n == 0 {
			break
		}
	}
	var streams, atLast int
	if err := a.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE version = $1) FROM projection_streams`, orderVersions).
		Scan(&streams, &atLast); err != nil {
		t.Fatal(err)
	}
	if streams != orderStreams || atLast != orderStreams {
		t.Fatalf("projector: %d streams, %d at version %d; want all %d", streams, atLast, orderVersions, orderStreams)
	}
	if lag, err := follower.Lag(ctx); err != nil || lag != 0 {
		t.Fatalf("projector lag = %d, %v; want 0", lag, err)
	}
	head, err := a.store.Head(ctx)
	if err != nil || head.Position != a.all[len(a.all)-1].Position {
		t.Fatalf("Head = %+v, %v; want the last event at position %d", head, err, a.all[len(a.all)-1].Position)
	}
	behind, err := a.store.Behind(ctx, pgstore.Cursor{})
	if err != nil || behind != int64(len(a.all)) {
		t.Fatalf("Behind(start) = %d, %v; want %d", behind, err, len(a.all))
	}

	var read []events.Envelope
	_, err = a.store.CatchUp(ctx, pgstore.CatchUpConfig{BatchSize: orderBatch}, func(evs []events.Envelope, _ pgstore.Cursor) error {
		read = append(read, evs...)
		return nil
	})
	if err != nil || len(read) != len(a.all) {
		t.Fatalf("CatchUp (export, rebuild) read %d of %d, %v", len(read), len(a.all), err)
	}
	stats, err := projections.Rebuild(ctx, a.pool, a.store, "rebuild", orderBatch, server.ReadModels(cfg), nil)
	if err != nil || stats.Events != int64(len(a.all)) {
		t.Fatalf("rebuild = %d events, %v; want %d", stats.Events, err, len(a.all))
	}
	diffs, err := projections.Compare(ctx, a.pool, projections.LiveSchema, "rebuild")
	if err != nil || len(diffs) != 0 {
		t.Fatalf("rebuild differs from live: %v %v", diffs, err)
	}
	t.Logf("%d events, one transaction each, across transaction id 10^9: relayed, projected, read and rebuilt in order", len(a.all))
}
