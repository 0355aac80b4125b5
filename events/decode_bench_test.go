package events_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
)

// servedEvents are the five events of a synchronous completion, as the API
// records them, with a small request and response, as read from a store
// (only their JSON, not the decoded data of an envelope New made).
func servedEvents(b *testing.B) []events.Envelope {
	b.Helper()
	at := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	req := json.RawMessage(`{"model":"small","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about the sea, please, in English."}],"max_tokens":256,"temperature":0.7}`)
	resp := json.RawMessage(`{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"small","choices":[{"index":0,"message":{"role":"assistant","content":"Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":20,"total_tokens":51}}`)
	ds := []events.Data{
		events.CompletionRequested{CompletionID: "chatcmpl-7f3a9c", AccountID: "acc_12", KeyID: "key_12a", Model: "small", Mode: events.ModeSync, Request: req},
		events.QuotaReserved{CompletionID: "chatcmpl-7f3a9c", AccountID: "acc_12", KeyID: "key_12a", CostNanoUSD: 2_000_000, Tokens: 2256,
			Day: "2026-03-14", Month: "2026-03", ExpiresAt: at.Add(10 * time.Minute)},
		events.CompletionStarted{CompletionID: "chatcmpl-7f3a9c", Executor: "api:host-1", LeaseExpiresAt: at.Add(time.Minute)},
		events.CompletionSucceeded{CompletionID: "chatcmpl-7f3a9c", AccountID: "acc_12", KeyID: "key_12a", Model: "small", Provider: "openai",
			UpstreamModel: "gpt-4o-mini", Usage: events.Usage{PromptTokens: 31, CompletionTokens: 20, TotalTokens: 51},
			CostNanoUSD: 8550, LatencyMS: 412, Response: resp},
		events.QuotaSettled{CompletionID: "chatcmpl-7f3a9c", AccountID: "acc_12", KeyID: "key_12a", ReservedNanoUSD: 2_000_000, CostNanoUSD: 8550,
			ReservedTokens: 2256, Tokens: 51, Day: "2026-03-14", Month: "2026-03"},
	}
	out := make([]events.Envelope, len(ds))
	for i, d := range ds {
		e, err := events.New("completion-chatcmpl-7f3a9c", d, events.Metadata{AccountID: "acc_12", Actor: "key:key_12a"}, at, "")
		if err != nil {
			b.Fatal(err)
		}
		out[i] = events.Envelope{EventID: e.EventID, StreamID: e.StreamID, StreamVersion: int64(i + 1), Type: e.Type,
			SchemaVersion: e.SchemaVersion, OccurredAt: e.OccurredAt, Data: e.Data, Metadata: e.Metadata}
	}
	return out
}

// BenchmarkDecode measures events.Decode of each of a served completion's
// events, and of all five (op = one completion).
func BenchmarkDecode(b *testing.B) {
	evs := servedEvents(b)
	for _, e := range evs {
		b.Run(e.Type, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := events.Decode(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("completion", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, e := range evs {
				if _, err := events.Decode(e); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
