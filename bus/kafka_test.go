package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
)

func kafkaConfig(t *testing.T) bus.Config {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, bus.Topic, bus.DeadLetterTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return bus.Config{KafkaBrokers: c.ListenAddrs(), Logger: testLogger(t)}
}

// rawRecords reads n records of topic with franz-go, as a tool outside
// Tollgate would.
func rawRecords(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(out), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func headers(r *kgo.Record) func(string) string {
	return func(k string) string {
		for _, h := range r.Headers {
			if h.Key == k {
				return string(h.Value)
			}
		}
		return ""
	}
}

func TestKafkaBusPublishSubscribe(t *testing.T) {
	t.Parallel()
	cfg := kafkaConfig(t)
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
	var evs []events.Envelope
	for i := range 12 {
		evs = append(evs, testEvent(t, []string{"acc_1", "acc_2", "acc_3"}[i%3], i+1))
	}
	publishAll(t, pub, evs)

	byID := make(map[string]events.Envelope, len(evs))
	for _, e := range evs {
		byID[e.EventID.String()] = e
	}

	// Outside tools see the account as the key and CloudEvents headers.
	partitionOf := map[string]int32{}
	lastPos := map[int32]int64{}
	for _, r := range rawRecords(t, cfg.KafkaBrokers, bus.Topic, len(evs)) {
		e, ok := byID[headers(r)("ce_id")]
		if !ok {
			t.Fatalf("record with unknown ce_id %q", headers(r)("ce_id"))
		}
		if string(r.Key) != e.Metadata.AccountID {
			t.Fatalf("record key %q, want account %q", r.Key, e.Metadata.AccountID)
		}
		assertCloudEvent(t, headers(r), e)
		if r.ProducerID < 0 {
			t.Fatalf("record written without a producer id: the producer is not idempotent")
		}
		if p, seen := partitionOf[e.Metadata.AccountID]; seen && p != r.Partition {
			t.Fatalf("account %s spread over partitions %d and %d", e.Metadata.AccountID, p, r.Partition)
		}
		partitionOf[e.Metadata.AccountID] = r.Partition
		if e.Position < lastPos[r.Partition] {
			t.Fatalf("partition %d out of order", r.Partition)
		}
		lastPos[r.Partition] = e.Position
	}

	// A consumer group started after the publish reads from the oldest.
	sub, err := bus.NewSubscriber(cfg, "projector")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	lastByAccount := map[string]int64{}
	for _, m := range receive(t, ch, len(evs)) {
		e, err := bus.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		assertSameEvent(t, byID[e.EventID.String()], e)
		if m.UUID != e.EventID.String() {
			t.Fatalf("message uuid %s, event %s", m.UUID, e.EventID)
		}
		if e.Position < lastByAccount[e.Metadata.AccountID] {
			t.Fatalf("account %s out of order", e.Metadata.AccountID)
		}
		lastByAccount[e.Metadata.AccountID] = e.Position
	}
}

func TestKafkaPingFailsWithoutBroker(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	addrs := c.ListenAddrs()
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Ping(ctx, bus.Config{KafkaBrokers: addrs}); err == nil {
		t.Fatal("ping succeeded without a broker")
	}
}
