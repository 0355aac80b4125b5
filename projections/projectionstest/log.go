// Package projectionstest helps the tests of read models: an event log on
// a real store, so that events have real versions and positions and a
// rebuild reads them back in the global order.
package projectionstest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// Log appends events to a real store and remembers them in the order
// they were appended.
type Log struct {
	T     testing.TB
	Ctx   context.Context
	Store *pgstore.Store
	// All are the events appended, as stored.
	All []events.Envelope
}

// NewLog returns a Log on pool's store.
func NewLog(t testing.TB, pool *pgxpool.Pool) *Log {
	t.Helper()
	st, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Log{T: t, Ctx: context.Background(), Store: st}
}

// Append appends ds to stream as one write, stamped at.
func (l *Log) Append(stream, account string, at time.Time, ds ...events.Data) []events.Envelope {
	l.T.Helper()
	evs := make([]events.Envelope, len(ds))
	for i, d := range ds {
		e, err := events.New(stream, d, events.Metadata{AccountID: account, Actor: "test"}, at, "")
		if err != nil {
			l.T.Fatal(err)
		}
		evs[i] = e
	}
	out, err := l.Store.Append(l.Ctx, stream, pgstore.AnyVersion, evs...)
	if err != nil {
		l.T.Fatal(err)
	}
	l.All = append(l.All, out...)
	return out
}

// Requested appends an async completion.requested.
func (l *Log) Requested(id, account, key, model string, at time.Time) events.Envelope {
	return l.Append(events.StreamCompletion+id, account, at, events.CompletionRequested{
		CompletionID: id, AccountID: account, KeyID: key, Model: model, Mode: events.ModeAsync,
		Request: json.RawMessage(`{"messages":[]}`),
	})[0]
}

// Started appends a worker's claim, its lease a minute long.
func (l *Log) Started(id, account string, at time.Time) events.Envelope {
	return l.Append(events.StreamCompletion+id, account, at, events.CompletionStarted{
		CompletionID: id, Executor: "worker:test", LeaseExpiresAt: at.Add(time.Minute),
	})[0]
}

// Succeeded appends a success with its usage and cost.
func (l *Log) Succeeded(id, account, key, model string, prompt, completion, cost int64, at time.Time) events.Envelope {
	return l.Append(events.StreamCompletion+id, account, at, events.CompletionSucceeded{
		CompletionID: id, AccountID: account, KeyID: key, Model: model, Provider: "echo", UpstreamModel: model + "-up",
		Usage:       events.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
		CostNanoUSD: cost, LatencyMS: 12, Response: json.RawMessage(`{"id":"x"}`),
	})[0]
}

// Failed appends an upstream failure.
func (l *Log) Failed(id, account, key, model string, at time.Time) events.Envelope {
	return l.Append(events.StreamCompletion+id, account, at, events.CompletionFailed{
		CompletionID: id, AccountID: account, KeyID: key, Model: model, Status: 502,
		ErrorType: "upstream_error", ErrorMessage: "provider " + id + " down",
	})[0]
}

// Complete records a whole successful completion.
func (l *Log) Complete(id, account, key, model string, prompt, completion, cost int64, at time.Time) []events.Envelope {
	return []events.Envelope{
		l.Requested(id, account, key, model, at),
		l.Started(id, account, at.Add(time.Second)),
		l.Succeeded(id, account, key, model, prompt, completion, cost, at.Add(2*time.Second)),
	}
}

// Stored reads the whole log back in the global order, as the relay
// publishes it. The store shows only events older than every running
// transaction of the (shared) server, so it waits until all are readable.
func (l *Log) Stored() []events.Envelope {
	l.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out []events.Envelope
		var cur pgstore.Cursor
		for {
			evs, next, err := l.Store.ReadAll(l.Ctx, cur, 500, pgstore.Filter{})
			if err != nil {
				l.T.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			out, cur = append(out, evs...), next
		}
		if len(out) >= len(l.All) {
			return out
		}
		if time.Now().After(deadline) {
			l.T.Fatalf("only %d of %d events readable after 30s", len(out), len(l.All))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Handler is what HandleAll delivers to: a projections.Set.
type Handler interface {
	Handle(ctx context.Context, e events.Envelope) error
}

// HandleAll delivers evs one at a time, failing the test on an error.
func HandleAll(t testing.TB, h Handler, evs ...events.Envelope) {
	t.Helper()
	for _, e := range evs {
		if err := h.Handle(context.Background(), e); err != nil {
			t.Fatalf("handle %s %s v%d: %v", e.Type, e.StreamID, e.StreamVersion, err)
		}
	}
}

// Day appends n completions of the day starting at dayStart, their
// lifecycle steps (requested, started, succeeded or failed) interleaved
// at random: about one in ten fails, one in ten stays queued and one in
// ten running. Ids continue from seq (c<seq+1>…); keys are
// key_<account>_0 and _1. It returns the last id number used.
func (l *Log) Day(rng *rand.Rand, seq int, dayStart time.Time, accounts, models []string, n int) int {
	type run struct {
		id, account, key, model string
		at                      time.Time
		step, outcome           int
	}
	var runs []*run
	for range n {
		seq++
		a := accounts[rng.IntN(len(accounts))]
		runs = append(runs, &run{
			id: fmt.Sprintf("c%d", seq), account: a, key: fmt.Sprintf("key_%s_%d", a, rng.IntN(2)), model: models[rng.IntN(len(models))],
			at:      dayStart.Add(time.Duration(rng.Int64N(int64(23 * time.Hour)))),
			outcome: rng.IntN(10),
		})
	}
	for len(runs) > 0 {
		i := rng.IntN(len(runs))
		r := runs[i]
		switch r.step {
		case 0:
			l.Requested(r.id, r.account, r.key, r.model, r.at)
		case 1:
			l.Started(r.id, r.account, r.at.Add(time.Second))
		case 2:
			if r.outcome == 0 {
				l.Failed(r.id, r.account, r.key, r.model, r.at.Add(2*time.Second))
			} else {
				l.Succeeded(r.id, r.account, r.key, r.model, rng.Int64N(2000), rng.Int64N(500), rng.Int64N(1_000_000), r.at.Add(2*time.Second))
			}
		}
		r.step++
		// Some stay queued (outcome 9) or running (outcome 8).
		if r.step == 3 || (r.outcome == 9 && r.step == 1) || (r.outcome == 8 && r.step == 2) {
			runs = append(runs[:i], runs[i+1:]...)
		}
	}
	return seq
}
