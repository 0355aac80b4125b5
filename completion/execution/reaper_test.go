package execution_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/usage"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

// dyingStore is the event store as seen by an executor whose process dies
// after the provider answered and before the outcome was stored: every
// outcome append fails.
type dyingStore struct{ *pgstore.Store }

var errDied = errors.New("process died")

func (s dyingStore) Append(ctx context.Context, streamID string, expected int64, evs ...events.Envelope) ([]events.Envelope, error) {
	for _, e := range evs {
		if e.Type == events.TypeCompletionSucceeded || e.Type == events.TypeCompletionFailed {
			return nil, errDied
		}
	}
	return s.Store.Append(ctx, streamID, expected, evs...)
}

// project brings the live read models up to date with the streams.
func project(t *testing.T, pool *pgxpool.Pool, store *pgstore.Store, ids ...string) {
	t.Helper()
	set, err := projections.NewSet(pool, projections.LiveSchema, nil, nil, jobs.New(projections.LiveSchema), usage.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		evs, err := store.Load(context.Background(), completion.CompletionStream(id))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if err := set.Handle(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestReaperAbandonsDeadWorkersClaimOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	up := llmtest.NewUpstream(t, 0)
	cfg := llmtest.Config(t, up.URL, "1", "2", "")
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	router, err := llm.NewRouter(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The clock every party reads; the test moves it past the lease.
	var nowNS atomic.Int64
	t0 := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	nowNS.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, nowNS.Load()).UTC() }

	dying := commands.NewService(dyingStore{store}, func(string) bool { return true }, now)
	exec, err := execution.New(execution.Config{Service: dying, LLM: router, Models: cfg.Model, Lease: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(store, func(string) bool { return true }, now)
	newReaper := func(instance string) *execution.Reaper {
		r, err := execution.NewReaper(execution.ReaperConfig{
			Service: svc, Instance: instance, Now: now,
			Expired: func(ctx context.Context, now time.Time, limit int) ([]string, error) {
				return jobs.ExpiredLeases(ctx, pool, now, limit)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	request := func(id string) {
		t.Helper()
		if _, err := svc.RequestCompletion(ctx, events.Metadata{AccountID: "acc_1"}, completion.RequestCompletion{
			CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeAsync,
			Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
		}, nil); err != nil {
			t.Fatal(err)
		}
	}

	// The worker claims, calls the provider, and dies before recording.
	request("chatcmpl-dead")
	c, err := exec.Claim(ctx, events.Metadata{}, "chatcmpl-dead", "worker:dead")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.Run(ctx, events.Metadata{}, c); !errors.Is(err, errDied) {
		t.Fatalf("Run: err = %v, want the simulated death", err)
	}
	if up.Calls() != 1 {
		t.Fatalf("provider called %d times, want 1", up.Calls())
	}
	project(t, pool, store, "chatcmpl-dead")

	reaper := newReaper("a")
	// While the lease runs, the reaper leaves the claim alone.
	nowNS.Store(t0.Add(59 * time.Second).UnixNano())
	if got, err := reaper.RunOnce(ctx); err != nil || len(got) != 0 {
		t.Fatalf("pass before expiry: %v, %v; want nothing", got, err)
	}
	// After it, the request ends abandoned.
	nowNS.Store(t0.Add(61 * time.Second).UnixNano())
	if got, err := reaper.RunOnce(ctx); err != nil || !slices.Equal(got, []string{"chatcmpl-dead"}) {
		t.Fatalf("pass after expiry: %v, %v; want [chatcmpl-dead]", got, err)
	}
	// A second pass, before the read model caught up, does nothing more.
	if got, err := reaper.RunOnce(ctx); err != nil || len(got) != 0 {
		t.Fatalf("second pass: %v, %v; want nothing", got, err)
	}
	project(t, pool, store, "chatcmpl-dead")
	if got, err := reaper.RunOnce(ctx); err != nil || len(got) != 0 {
		t.Fatalf("third pass: %v, %v; want nothing", got, err)
	}
	evs, err := store.Load(ctx, completion.CompletionStream("chatcmpl-dead"))
	if err != nil {
		t.Fatal(err)
	}
	var typs []string
	for _, e := range evs {
		typs = append(typs, e.Type)
	}
	if !slices.Equal(typs, []string{events.TypeCompletionRequested, events.TypeCompletionStarted, events.TypeCompletionAbandoned}) {
		t.Fatalf("stream = %v", typs)
	}
	ab, err := events.Decode(evs[2])
	if err != nil {
		t.Fatal(err)
	}
	if a := ab.(events.CompletionAbandoned); a.Executor != "worker:dead" || !a.LeaseExpiresAt.Equal(t0.Add(time.Minute)) || a.AccountID != "acc_1" || evs[2].Metadata.Actor != "reaper:a" {
		t.Errorf("abandoned = %+v, metadata %+v", a, evs[2].Metadata)
	}
	// Nothing is billed: no ledger row, and the job reads abandoned.
	var rows int
	var status string
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger WHERE completion_id = 'chatcmpl-dead'`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("usage_ledger rows = %d (%v), want 0", rows, err)
	}
	if err := pool.QueryRow(ctx, `SELECT status FROM jobs WHERE completion_id = 'chatcmpl-dead'`).Scan(&status); err != nil || status != jobs.JobAbandoned {
		t.Errorf("job status = %q (%v), want abandoned", status, err)
	}
	// The dead worker's outcome, were it to come back, is refused.
	if _, err := svc.FinishClaimed(ctx, events.Metadata{}, c, completion.FinishCompletion{Executor: "worker:dead",
		Succeeded: &events.CompletionSucceeded{Provider: "up", UpstreamModel: "m", Response: json.RawMessage(`{}`)}}); !errors.Is(err, events.ErrConflict) {
		t.Errorf("late outcome: err = %v, want a conflict", err)
	}

	// Concurrent reapers abandon a dead claim once between them.
	request("chatcmpl-dead2")
	if _, err := exec.Claim(ctx, events.Metadata{}, "chatcmpl-dead2", "worker:dead"); err != nil {
		t.Fatal(err)
	}
	project(t, pool, store, "chatcmpl-dead2")
	nowNS.Store(t0.Add(5 * time.Minute).UnixNano())
	var wg sync.WaitGroup
	var total atomic.Int64
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := newReaper(fmt.Sprintf("r%d", i)).RunOnce(ctx)
			if err != nil {
				t.Errorf("reaper %d: %v", i, err)
			}
			total.Add(int64(len(got)))
		}()
	}
	wg.Wait()
	if total.Load() != 1 {
		t.Errorf("reapers abandoned %d times, want 1", total.Load())
	}
	if evs, _ := store.Load(ctx, completion.CompletionStream("chatcmpl-dead2")); len(evs) != 3 || evs[2].Type != events.TypeCompletionAbandoned {
		t.Errorf("stream of dead2 has %d events", len(evs))
	}
}
