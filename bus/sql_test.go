package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

func sqlConfig(t *testing.T) bus.Config {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	return bus.Config{Pool: pool, Logger: testLogger(t), SQLPollInterval: 10 * time.Millisecond}
}

func publishAll(t *testing.T, pub message.Publisher, evs []events.Envelope) {
	t.Helper()
	msgs := make([]*message.Message, len(evs))
	for i, e := range evs {
		m, err := bus.ToMessage(e)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	if err := pub.Publish(bus.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

func TestSQLBusPublishSubscribe(t *testing.T) {
	t.Parallel()
	cfg := sqlConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.Ping(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pub, err := bus.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	evs := []events.Envelope{testEvent(t, "acc_1", 1), testEvent(t, "acc_2", 2), testEvent(t, "acc_1", 3)}
	publishAll(t, pub, evs)

	// Two consumer groups each get every message, in order, from the
	// oldest, although they subscribed after the publish.
	for _, group := range []string{"projector", "worker"} {
		sub, err := bus.NewSubscriber(cfg, group)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(ctx, bus.Topic)
		if err != nil {
			t.Fatal(err)
		}
		got := receive(t, ch, len(evs))
		for i, m := range got {
			e, err := bus.FromMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			assertSameEvent(t, evs[i], e)
			assertCloudEvent(t, m.Metadata.Get, evs[i])
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
