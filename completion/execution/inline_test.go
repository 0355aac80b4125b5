package execution_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llmtest"
)

// prepare decides a synchronous request with a reservation, as the API
// does, storing nothing.
func (o *outcomeRig) prepare(id string) *execution.Inline {
	o.t.Helper()
	now := time.Now().UTC()
	p, err := o.exec.Prepare(events.Metadata{AccountID: "acc_1", CorrelationID: "req_" + id, Actor: "key:key_1"}, completion.RequestCompletion{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeSync,
		Request:     json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
		Reservation: &events.QuotaReserved{CostNanoUSD: 50_000_000, Tokens: 100, Day: now.Format("2006-01-02"), Month: now.Format("2006-01"), ExpiresAt: now.Add(time.Hour)},
	}, "api:a")
	if err != nil {
		o.t.Fatal(err)
	}
	if n := len(o.types(id)); n != 0 {
		o.t.Fatalf("Prepare stored %d events, want none", n)
	}
	o.mu.Lock()
	o.ids = append(o.ids, id)
	o.mu.Unlock()
	return p
}

// transactions counts the transactions id's events were stored in.
func (o *outcomeRig) transactions(id string) int {
	o.t.Helper()
	var n int
	if err := o.pool.QueryRow(o.ctx, `SELECT count(DISTINCT transaction_id) FROM events WHERE stream_id = $1`, completion.CompletionStream(id)).Scan(&n); err != nil {
		o.t.Fatal(err)
	}
	return n
}

// A short synchronous run, plain or streamed, is one append: the request,
// its reservation, the claim and the outcome in one transaction, with
// nothing read; a stream stores its request first, before any chunk.
func TestInlineRunIsOneAppend(t *testing.T) {
	t.Parallel()
	o := newOutcomeRig(t, nil, 3*time.Second, func(int64) injection { return reach })
	p := o.prepare("chatcmpl-inline-one")
	done, err := o.exec.RunInline(o.ctx, p)
	if err != nil || done.Succeeded == nil || done.Version != 5 {
		t.Fatalf("RunInline: %+v, %v", done, err)
	}
	want := []string{events.TypeCompletionRequested, events.TypeQuotaReserved, events.TypeCompletionStarted, events.TypeCompletionSucceeded, events.TypeQuotaSettled}
	if got := o.types(done.ID); !slices.Equal(got, want) {
		t.Fatalf("stream %v, want %v", got, want)
	}
	if n := o.transactions(done.ID); n != 1 {
		t.Errorf("stored in %d transactions, want 1", n)
	}
	if n := o.flaky.loads.Load(); n != 0 {
		t.Errorf("read %d streams, want none", n)
	}
	o.checkBilledOnce(done.ID)

	o.settled.Store(0)
	s := o.prepare("chatcmpl-inline-stream")
	var before []string
	done, err = o.exec.StreamInline(o.ctx, s, func(json.RawMessage) error {
		if before == nil {
			before = o.types(s.State().ID)
		}
		return nil
	})
	if err != nil || done.Succeeded == nil {
		t.Fatalf("StreamInline: %+v, %v", done, err)
	}
	if len(before) != 3 {
		t.Errorf("at the first chunk the stream held %v, want the request, reservation and claim", before)
	}
	o.checkBilledOnce(done.ID)
}

// A synchronous run whose one append is lost on the way (twice) or
// commits while it times out is recorded and billed once.
func TestInlineAppendThroughTimeouts(t *testing.T) {
	t.Parallel()
	for _, inj := range []injection{drop, commitThenTimeout} {
		o := newOutcomeRig(t, nil, 3*time.Second, func(n int64) injection {
			if n <= 2 {
				return inj
			}
			return reach
		})
		p := o.prepare("chatcmpl-inline-timeout-" + string(rune('a'+inj)))
		done, err := o.exec.RunInline(o.ctx, p)
		if err != nil || done.Succeeded == nil || done.Status != completion.StatusSucceeded {
			t.Fatalf("%d: RunInline: %+v, %v (stream %v)", inj, done, err, o.types(p.State().ID))
		}
		if got := o.types(done.ID); len(got) != 5 {
			t.Fatalf("%d: stream %v, want the five events once", inj, got)
		}
		o.checkBilledOnce(done.ID)
	}
}

// A synchronous run that outlasts jobs.inline_claim_after (a tenth of the
// 1s lease here) stores its request and claim first, renews its lease,
// and then records its outcome on that claim: billed once.
func TestInlineLongRunStoresItsClaimFirst(t *testing.T) {
	t.Parallel()
	r, _ := newLeaseRig(t, llmtest.Script{Delay: 1200 * time.Millisecond})
	id := "chatcmpl-inline-long"
	p, err := r.exec.Prepare(events.Metadata{AccountID: "acc_1"}, completion.RequestCompletion{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeSync,
		Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
	}, "api:a")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(600 * time.Millisecond)
		if got := r.types(id); !slices.Contains(got, events.TypeCompletionStarted) || slices.Contains(got, events.TypeCompletionSucceeded) {
			t.Errorf("while running, stream %v: want the request and claim stored", got)
		}
	}()
	done, err := r.exec.RunInline(r.ctx, p)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("RunInline: %+v, %v (stream %v)", done, err, r.types(id))
	}
	r.checkOneOutcome(id)
}

// A store that refuses connections (nothing sent) ends a synchronous run
// at once with ErrNotStored and nothing stored: the caller releases the
// reservation and answers 503.
func TestInlineRefusedStoresNothing(t *testing.T) {
	t.Parallel()
	o := newOutcomeRig(t, nil, 3*time.Second, func(int64) injection { return reach })
	dead, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dead.Close)
	store, err := pgstore.New(dead, nil)
	if err != nil {
		t.Fatal(err)
	}
	up := llmtest.NewScripted(t, llmtest.Script{})
	cfg := llmtest.Config(t, up.URL, "1000", "2000", "")
	router, err := llm.NewRouter(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(store, func(string) bool { return true }, time.Now)
	exec, err := execution.New(execution.Config{Service: svc, LLM: router, Streams: router, Models: cfg.Model, Lease: 3 * time.Second,
		Transient: pgstore.Transient, Ambiguous: pgstore.Ambiguous})
	if err != nil {
		t.Fatal(err)
	}
	p, err := exec.Prepare(events.Metadata{AccountID: "acc_1"}, completion.RequestCompletion{
		CompletionID: "chatcmpl-inline-refused", AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeSync,
		Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
	}, "api:a")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := exec.RunInline(o.ctx, p); !errors.Is(err, execution.ErrNotStored) {
		t.Fatalf("RunInline: %v, want ErrNotStored", err)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("RunInline took %s: want it to give up at once", d)
	}
	if _, err := exec.StreamInline(o.ctx, p, func(json.RawMessage) error { t.Error("a chunk reached the client"); return nil }); !errors.Is(err, execution.ErrNotStored) {
		t.Fatalf("StreamInline: %v, want ErrNotStored", err)
	}
}
