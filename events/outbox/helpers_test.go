package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
)

// sqlBus returns the configuration of the PostgreSQL bus on s's database
// and a publisher on it, closed when the test ends.
func sqlBus(t *testing.T, s *pgstore.Store) (bus.Config, message.Publisher) {
	t.Helper()
	cfg := bus.Config{Pool: s.Pool(), SQLPollInterval: 10 * time.Millisecond}
	pub, err := bus.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return cfg, pub
}

// run runs relay until the returned stop is called, which fails the test
// if Run returned an error.
func run(ctx context.Context, t *testing.T, relay *outbox.Relay) (stop func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- relay.Run(runCtx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-runErr; err != nil {
			t.Fatal(err)
		}
	}
}

// recorder is a publisher that keeps what it was given, for tests about
// the relay's logic rather than the bus.
type recorder struct {
	mu     sync.Mutex
	msgs   []*message.Message
	topics []string
	// failAfter, when >= 0, makes Publish deliver that many messages of a
	// call and then fail, as a process that dies mid-batch would.
	failAfter int
}

func newRecorder() *recorder { return &recorder{failAfter: -1} }

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if topic != bus.Topic && topic != bus.JobsTopic {
		return fmt.Errorf("unexpected topic %q", topic)
	}
	for i, m := range msgs {
		if r.failAfter >= 0 && i == r.failAfter {
			return errors.New("publisher died")
		}
		r.msgs, r.topics = append(r.msgs, m), append(r.topics, topic)
	}
	if r.failAfter >= 0 && len(msgs) <= r.failAfter {
		return errors.New("publisher died after publishing")
	}
	return nil
}

func (r *recorder) Close() error { return nil }

// ids returns the ids of the messages published to bus.Topic.
func (r *recorder) ids() []uuid.UUID { return r.idsOn(bus.Topic) }

// idsOn returns the ids of the messages published to topic, in order.
func (r *recorder) idsOn(topic string) []uuid.UUID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uuid.UUID
	for i, m := range r.msgs {
		if r.topics[i] == topic {
			out = append(out, uuid.MustParse(m.UUID))
		}
	}
	return out
}

// discard is a Watermill publisher that drops what it is given: the relay's
// own cost (read, decode, encode) without the bus's.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Close() error                              { return nil }

// appendCompletions appends n completions of five events each in two
// transactions (quota reserved, requested and started; succeeded and quota
// settled), one in ten queued (async): the jobs. (The API's synchronous
// path now stores its five in one; the relay reads the same events.)
func appendCompletions(tb testing.TB, s *pgstore.Store, n int) (jobs int) {
	tb.Helper()
	ctx := context.Background()
	at := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	request := json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the attached paragraph in two sentences, please: the quick brown fox jumps over the lazy dog."}],"max_tokens":256}`)
	response := json.RawMessage(`{"id":"chatcmpl-x","object":"chat.completion","created":1795796479,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"A fox jumps over a dog. That is the whole paragraph.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":41,"completion_tokens":14,"total_tokens":55},"system_fingerprint":"fp_0123456789"}`)
	for i := range n {
		id, acc, key := fmt.Sprintf("chatcmpl-bench%06d", i), fmt.Sprintf("acc_%d", i%7), fmt.Sprintf("key_%d", i%7)
		mode := events.ModeSync
		if i%10 == 0 {
			mode, jobs = events.ModeAsync, jobs+1
		}
		md := events.Metadata{AccountID: acc, CorrelationID: "req_" + id, CausationID: "req_" + id, Actor: "key:" + key}
		newEv := func(d events.Data, t time.Time) events.Envelope {
			e, err := events.New(events.StreamCompletion+id, d, md, t, "")
			if err != nil {
				tb.Fatal(err)
			}
			return e
		}
		first := []events.Envelope{
			newEv(events.QuotaReserved{CompletionID: id, AccountID: acc, KeyID: key, CostNanoUSD: 250_000, Tokens: 297, Day: "2026-11-03", Month: "2026-11", ExpiresAt: at.Add(time.Hour)}, at),
			newEv(events.CompletionRequested{CompletionID: id, AccountID: acc, KeyID: key, Model: "gpt-4o-mini", Mode: mode, Request: request}, at),
			newEv(events.CompletionStarted{CompletionID: id, Executor: "api:bench", LeaseExpiresAt: at.Add(10 * time.Minute)}, at),
		}
		second := []events.Envelope{
			newEv(events.CompletionSucceeded{CompletionID: id, AccountID: acc, KeyID: key, Model: "gpt-4o-mini", Provider: "openai", UpstreamModel: "gpt-4o-mini",
				Usage: events.Usage{PromptTokens: 41, CompletionTokens: 14, TotalTokens: 55}, CostNanoUSD: 14_550, LatencyMS: 420, Response: response}, at.Add(time.Second)),
			newEv(events.QuotaSettled{CompletionID: id, AccountID: acc, KeyID: key, ReservedNanoUSD: 250_000, CostNanoUSD: 14_550, ReservedTokens: 297, Tokens: 55, Day: "2026-11-03", Month: "2026-11"}, at.Add(time.Second)),
		}
		if _, err := s.Append(ctx, events.StreamCompletion+id, 0, first...); err != nil {
			tb.Fatal(err)
		}
		if _, err := s.Append(ctx, events.StreamCompletion+id, 3, second...); err != nil {
			tb.Fatal(err)
		}
	}
	return jobs
}
