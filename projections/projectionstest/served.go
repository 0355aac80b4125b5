package projectionstest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tollgate/tollgate/events"
)

// ServedRequest and ServedResponse are the bodies a served completion's
// events carry: a small chat request and its answer.
var (
	ServedRequest  = json.RawMessage(`{"model":"small","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about the sea, please, in English."}],"max_tokens":256,"temperature":0.7}`)
	ServedResponse = json.RawMessage(`{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"small","choices":[{"index":0,"message":{"role":"assistant","content":"Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":20,"total_tokens":51}}`)
)

// Served is one synchronous completion as the API records it, in two
// appends: Admitted (completion.requested, quota.reserved and
// completion.started) and Answered (completion.succeeded and
// quota.settled).
type Served struct {
	Stream, Account    string
	At                 time.Time
	Admitted, Answered []events.Data
}

// NewServed draws completion id's served completion at at from rng: one
// of accounts accounts (acc_0…), its key acc_N_key, one of two models,
// random usage and cost.
func NewServed(rng *rand.Rand, id string, accounts int, at time.Time) Served {
	a := fmt.Sprintf("acc_%d", rng.IntN(accounts))
	key, model := a+"_key", []string{"small", "large"}[rng.IntN(2)]
	day, month := at.UTC().Format(time.DateOnly), at.UTC().Format("2006-01")
	prompt, completion := rng.Int64N(2000), rng.Int64N(500)
	cost, reserved := rng.Int64N(1_000_000), int64(2_000_000)
	return Served{
		Stream: events.StreamCompletion + id, Account: a, At: at,
		Admitted: []events.Data{
			events.CompletionRequested{CompletionID: id, AccountID: a, KeyID: key, Model: model, Mode: events.ModeSync, Request: ServedRequest},
			events.QuotaReserved{CompletionID: id, AccountID: a, KeyID: key, CostNanoUSD: reserved, Tokens: 2256,
				Day: day, Month: month, ExpiresAt: at.Add(10 * time.Minute)},
			events.CompletionStarted{CompletionID: id, Executor: "api:bench", LeaseExpiresAt: at.Add(time.Minute)},
		},
		Answered: []events.Data{
			events.CompletionSucceeded{CompletionID: id, AccountID: a, KeyID: key, Model: model, Provider: "echo", UpstreamModel: model,
				Usage:       events.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
				CostNanoUSD: cost, LatencyMS: 3, Response: ServedResponse},
			events.QuotaSettled{CompletionID: id, AccountID: a, KeyID: key, ReservedNanoUSD: reserved, CostNanoUSD: cost,
				ReservedTokens: 2256, Tokens: prompt + completion, Day: day, Month: month},
		},
	}
}

// Append appends s to l as the API does, in two appends.
func (s Served) Append(l *Log) {
	l.T.Helper()
	l.Append(s.Stream, s.Account, s.At, s.Admitted...)
	l.Append(s.Stream, s.Account, s.At.Add(time.Second), s.Answered...)
}

// Envelopes returns s's five events as a store reads them back, without a
// store: stream versions 1 to 5, positions from pos on, and only their
// JSON (not the decoded data an envelope events.New made carries).
func (s Served) Envelopes(pos int64) ([]events.Envelope, error) {
	out := make([]events.Envelope, 0, len(s.Admitted)+len(s.Answered))
	for i, d := range append(append([]events.Data{}, s.Admitted...), s.Answered...) {
		at := s.At
		if i >= len(s.Admitted) {
			at = at.Add(time.Second)
		}
		e, err := events.New(s.Stream, d, events.Metadata{AccountID: s.Account, Actor: "test"}, at, "")
		if err != nil {
			return nil, err
		}
		out = append(out, Stored(e, int64(i+1), pos+int64(i)))
	}
	return out, nil
}

// Stored returns e as a store would read it back at version and
// position: its fields, without the decoded data of an envelope made by
// events.New.
func Stored(e events.Envelope, version, position int64) events.Envelope {
	return events.Envelope{EventID: e.EventID, StreamID: e.StreamID, StreamVersion: version, Type: e.Type,
		SchemaVersion: e.SchemaVersion, OccurredAt: e.OccurredAt, Data: e.Data, Metadata: e.Metadata, Position: position}
}
