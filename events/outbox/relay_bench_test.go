package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/outbox"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// benchCompletions is how many completions one relay batch carries: five
// events each, DefaultBatchSize events in all.
const benchCompletions = outbox.DefaultBatchSize / 5

// discard is a Watermill publisher that drops what it is given: the relay's
// own cost (read, decode, encode) without the bus's.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Close() error                              { return nil }

// appendCompletions appends n completions the way the API does (quota
// reserved, requested and started in one transaction; succeeded and quota
// settled in another), one in ten queued (async): the jobs.
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

// BenchmarkRelayBatch measures one relay batch: DefaultBatchSize events
// (100 completions, ten of them queued jobs) read after a fresh checkpoint
// and published, to a bus that drops them (the relay's own CPU) or to the
// PostgreSQL bus (watermill-sql, its inserts included).
//
// Run: go test -run '^$' -bench RelayBatch -benchtime 200x -count 6 ./events/outbox | tee new.txt; benchstat old.txt new.txt
func BenchmarkRelayBatch(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	s, err := pgstore.New(pool, nil)
	if err != nil {
		b.Fatal(err)
	}
	appendCompletions(b, s, benchCompletions)
	stored(b, s, 5*benchCompletions)
	sqlPub, err := bus.NewPublisher(bus.Config{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sqlPub.Close() })
	seq := 0 // each relay a checkpoint of its own, from the beginning
	for _, pub := range []struct {
		name string
		pub  message.Publisher
	}{{"discard", discard{}}, {"postgresql", sqlPub}} {
		b.Run("publish=all/bus="+pub.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				seq++
				relay, err := outbox.NewRelay(outbox.RelayConfig{
					Store: s, Publisher: bus.EventPublisher{Publisher: pub.pub}, Topic: bus.Topic,
					Name:   fmt.Sprintf("bench-%d", seq),
					Routes: []outbox.Route{{Topic: bus.JobsTopic, Match: bus.IsJob}},
				})
				if err != nil {
					b.Fatal(err)
				}
				if n, err := relay.RunOnce(ctx); err != nil || n != 5*benchCompletions {
					b.Fatalf("relayed %d, %v", n, err)
				}
			}
		})
	}
}
