package bus_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
)

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if os.Getenv("TOLLGATE_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testEvent(t *testing.T, account string, n int) events.Envelope {
	t.Helper()
	data, err := json.Marshal(events.APIKeyIssued{KeyID: fmt.Sprintf("key_%d", n), AccountID: account, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return events.Envelope{
		EventID:       uuid.New(),
		StreamID:      events.StreamAPIKey + fmt.Sprintf("key_%d", n),
		StreamVersion: 1,
		Type:          events.TypeAPIKeyIssued,
		SchemaVersion: 1,
		OccurredAt:    time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC),
		Data:          data,
		Metadata:      events.Metadata{AccountID: account, CorrelationID: "req_1", Actor: "admin"},
		Position:      int64(n),
	}
}

func assertSameEvent(t *testing.T, want, got events.Envelope) {
	t.Helper()
	if want.EventID != got.EventID || want.StreamID != got.StreamID || want.StreamVersion != got.StreamVersion ||
		want.Type != got.Type || want.SchemaVersion != got.SchemaVersion || !want.OccurredAt.Equal(got.OccurredAt) ||
		want.Metadata != got.Metadata || want.Position != got.Position {
		t.Fatalf("event differs:\nwant %+v\n got %+v", want, got)
	}
	var w, g any
	if err := json.Unmarshal(want.Data, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got.Data, &g); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(w) != fmt.Sprint(g) {
		t.Fatalf("data differs: want %s got %s", want.Data, got.Data)
	}
}

func assertCloudEvent(t *testing.T, md func(string) string, e events.Envelope) {
	t.Helper()
	want := map[string]string{
		"ce_specversion": "1.0",
		"ce_id":          e.EventID.String(),
		"ce_type":        e.Type,
		"ce_source":      "tollgate",
		"ce_time":        e.OccurredAt.Format(time.RFC3339Nano),
		"ce_subject":     e.StreamID,
		"content-type":   "application/json",
		"account_id":     e.Metadata.AccountID,
	}
	for k, v := range want {
		if got := md(k); got != v {
			t.Errorf("event %s: %s = %q, want %q", e.EventID, k, got, v)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	t.Parallel()
	e := testEvent(t, "acc_1", 7)
	m, err := bus.ToMessage(e)
	if err != nil {
		t.Fatal(err)
	}
	if m.UUID != e.EventID.String() {
		t.Fatalf("uuid %s, want event id %s", m.UUID, e.EventID)
	}
	assertCloudEvent(t, m.Metadata.Get, e)
	if got, err := time.Parse(time.RFC3339Nano, m.Metadata.Get("ce_time")); err != nil || !got.Equal(e.OccurredAt) {
		t.Fatalf("ce_time %q does not parse back (%v)", m.Metadata.Get("ce_time"), err)
	}
	got, err := bus.FromMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, e, got)

	// A message that survived a trip through any transport decodes too.
	cp := message.NewMessage(m.UUID, append([]byte(nil), m.Payload...))
	for k, v := range m.Metadata {
		cp.Metadata.Set(k, v)
	}
	if got, err = bus.FromMessage(cp); err != nil {
		t.Fatal(err)
	}
	assertSameEvent(t, e, got)

	other, err := bus.ToMessageWithSource(e, "tollgate-eu")
	if err != nil {
		t.Fatal(err)
	}
	if s := other.Metadata.Get("ce_source"); s != "tollgate-eu" {
		t.Fatalf("ce_source %q", s)
	}
	if k := bus.PartitionKey(m); k != "acc_1" {
		t.Fatalf("partition key %q, want the account", k)
	}
	e.Metadata.AccountID = ""
	noAccount, err := bus.ToMessage(e)
	if err != nil {
		t.Fatal(err)
	}
	if k := bus.PartitionKey(noAccount); k != e.StreamID {
		t.Fatalf("partition key of an event without account %q, want the stream", k)
	}
}

func TestFromMessageRejects(t *testing.T) {
	t.Parallel()
	e := testEvent(t, "acc_1", 1)
	m, err := bus.ToMessage(e)
	if err != nil {
		t.Fatal(err)
	}
	m.Metadata.Set("ce_id", uuid.NewString())
	if _, err := bus.FromMessage(m); err == nil {
		t.Fatal("a ce_id that contradicts the payload was accepted")
	}
	if _, err := bus.FromMessage(message.NewMessage("x", []byte("not json"))); err == nil {
		t.Fatal("garbage was accepted")
	}
	if _, err := bus.FromMessage(message.NewMessage("x", []byte(`{"type":"a"}`))); err == nil {
		t.Fatal("an envelope without id was accepted")
	}
	if _, err := bus.ToMessage(events.Envelope{}); err == nil {
		t.Fatal("an event without id was turned into a message")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (bus.Config{}).Validate(); err == nil {
		t.Fatal("a config with neither Kafka nor PostgreSQL is valid")
	}
	if err := (bus.Config{KafkaBrokers: []string{"127.0.0.1:9092"}}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (bus.Config{KafkaBrokers: []string{""}}).Validate(); err == nil {
		t.Fatal("an empty broker address is valid")
	}
	if err := (bus.RouterConfig{}).Validate(); err == nil {
		t.Fatal("a router without a dead-letter publisher is valid")
	}
	if _, err := bus.NewSubscriber(bus.Config{KafkaBrokers: []string{"127.0.0.1:1"}}, ""); err == nil {
		t.Fatal("a subscriber without consumer group was created")
	}
	p := bus.Config{}.SaramaProducerConfig()
	if !p.Producer.Idempotent || p.Net.MaxOpenRequests != 1 || p.Producer.RequiredAcks != -1 {
		t.Fatalf("producer is not idempotent: %+v", p.Producer)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("sarama rejects the producer config: %v", err)
	}
}

// receive reads n messages from ch, acking each, within timeout.
func receive(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var out []*message.Message
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d messages", len(out), n)
			}
			m.Ack()
			out = append(out, m)
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(out), n)
		}
	}
	return out
}
