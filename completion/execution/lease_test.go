package execution_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
)

// Short leases on the real clock: a 1s lease, a reaper every 200ms and a
// projector every 50ms keeping the jobs read model current, as in a
// deployment where the provider takes three leases to answer.
const (
	shortLease     = time.Second
	reaperInterval = 200 * time.Millisecond
)

// leaseRig runs an executor, a reaper and the jobs projection on a real
// database, all on the real clock.
type leaseRig struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *pgstore.Store
	svc   *commands.Service
	exec  *execution.Executor
	mu    sync.Mutex
	ids   []string
	// renewed counts the executor's Renewed calls.
	renewed atomic.Int64
}

func newLeaseRig(t *testing.T, script llmtest.Script) (*leaseRig, *llmtest.Scripted) {
	t.Helper()
	up := llmtest.NewScripted(t, script)
	return newLeaseRigFor(t, llmtest.Config(t, up.URL, "1000", "2000", "")), up
}

// newLeaseRigFor is newLeaseRig for any configuration of model "m".
func newLeaseRigFor(t *testing.T, cfg *config.Config) *leaseRig {
	t.Helper()
	return newLeaseRigWith(t, cfg, rigOptions{})
}

// rigOptions vary a leaseRig.
type rigOptions struct {
	// pool: a migrated database (nil: one of the shared server's).
	pool *pgxpool.Pool
	// lease: the claims' lease (0: shortLease).
	lease time.Duration
	// wrap gives the executor's Service its store (nil: the real one).
	wrap func(*pgstore.Store) commands.EventStore
	// settled is the executor's Settled hook.
	settled func(context.Context, completion.Completion)
}

// newLeaseRigWith is newLeaseRigFor varied by opts.
func newLeaseRigWith(t *testing.T, cfg *config.Config, opts rigOptions) *leaseRig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &leaseRig{t: t, ctx: ctx, pool: opts.pool}
	if r.pool == nil {
		r.pool, _ = pgtest.NewPool(t)
	}
	lease := cmp.Or(opts.lease, shortLease)
	var err error
	if r.store, err = pgstore.New(r.pool, nil); err != nil {
		t.Fatal(err)
	}
	router, err := llm.NewRouter(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var store commands.EventStore = r.store
	if opts.wrap != nil {
		store = opts.wrap(r.store)
	}
	r.svc = commands.NewService(store, func(string) bool { return true }, time.Now)
	if r.exec, err = execution.New(execution.Config{Service: r.svc, LLM: router, Streams: router, Models: cfg.Model, Lease: lease,
		Renewed: func(context.Context, completion.Completion) { r.renewed.Add(1) }, Settled: opts.settled, Transient: pgstore.Transient}); err != nil {
		t.Fatal(err)
	}
	set, err := projections.NewSet(r.pool, projections.LiveSchema, nil, nil, jobs.New(projections.LiveSchema),
		usage.New(projections.LiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	reaper, err := execution.NewReaper(execution.ReaperConfig{
		Service: commands.NewService(r.store, func(string) bool { return true }, time.Now), Instance: "lease-test", Interval: reaperInterval,
		Expired: func(ctx context.Context, now time.Time, limit int) ([]string, error) {
			return jobs.ExpiredLeases(ctx, r.pool, now, limit)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = reaper.Run(ctx) }()
	go func() { defer wg.Done(); r.projectLoop(set) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// projectLoop applies the streams of the rig's completions to the read
// model every 50ms (already applied events are skipped).
func (r *leaseRig) projectLoop(set *projections.Set) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		ids := slices.Clone(r.ids)
		r.mu.Unlock()
		for _, id := range ids {
			evs, err := r.store.Load(r.ctx, completion.CompletionStream(id))
			if err != nil {
				continue // the test is ending
			}
			_ = set.HandleBatch(r.ctx, evs)
		}
	}
}

// request records a request (claimed by executor when it is not empty,
// as the API's inline path does) and has the projector follow it.
func (r *leaseRig) request(id, mode, executor string) completion.Completion {
	r.t.Helper()
	var claim *completion.StartCompletion
	if executor != "" {
		claim = r.exec.StartCommand(executor)
	}
	c, err := r.svc.RequestCompletion(r.ctx, events.Metadata{AccountID: "acc_1", CorrelationID: "req_" + id}, completion.RequestCompletion{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: mode,
		Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
	}, claim)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.ids = append(r.ids, id)
	r.mu.Unlock()
	return c
}

// types returns the completion's event types in stream order.
func (r *leaseRig) types(id string) []string {
	r.t.Helper()
	evs, err := r.store.Load(context.Background(), completion.CompletionStream(id))
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// checkOneOutcome fails unless the stream holds exactly one outcome, a
// success, and at least one lease renewal before it.
func (r *leaseRig) checkOneOutcome(id string) {
	r.t.Helper()
	typs := r.types(id)
	count := func(typ string) int {
		n := 0
		for _, x := range typs {
			if x == typ {
				n++
			}
		}
		return n
	}
	if count(events.TypeCompletionSucceeded) != 1 || count(events.TypeCompletionAbandoned) != 0 || count(events.TypeCompletionFailed) != 0 {
		r.t.Fatalf("stream of %s: %v; want one completion.succeeded and no other outcome", id, typs)
	}
	if count(events.TypeCompletionLeaseRenewed) == 0 {
		r.t.Fatalf("stream of %s: %v; want lease renewals", id, typs)
	}
	if n := count(events.TypeCompletionLeaseRenewed); int64(n) != r.renewed.Load() {
		r.t.Errorf("%d renewals stored, Renewed called %d times", n, r.renewed.Load())
	}
	r.t.Logf("%s: %d lease renewals", id, count(events.TypeCompletionLeaseRenewed))
}

// A synchronous call that takes three leases answers with its result:
// its executor renews the claim while the provider works, so the reaper
// leaves it alone and the outcome is recorded and billed once.
func TestSyncCallOutlivingTheLeaseSucceeds(t *testing.T) {
	t.Parallel()
	r, up := newLeaseRig(t, llmtest.Script{Delay: 3 * shortLease})
	c := r.request("chatcmpl-longsync", events.ModeSync, "api:a")
	done, err := r.exec.Run(r.ctx, events.Metadata{}, c)
	if err != nil {
		t.Fatalf("Run: %v (stream %v)", err, r.types(c.ID))
	}
	if done.Succeeded == nil || done.Status != completion.StatusSucceeded {
		t.Fatalf("outcome %+v", done)
	}
	if up.Calls() != 1 {
		t.Fatalf("provider called %d times", up.Calls())
	}
	r.checkOneOutcome(c.ID)
}

// An async job (claimed by a worker) that takes three leases succeeds.
func TestAsyncJobOutlivingTheLeaseSucceeds(t *testing.T) {
	t.Parallel()
	r, _ := newLeaseRig(t, llmtest.Script{Delay: 3 * shortLease})
	r.request("chatcmpl-longasync", events.ModeAsync, "")
	c, err := r.exec.Claim(r.ctx, events.Metadata{}, "chatcmpl-longasync", "worker:w1")
	if err != nil {
		t.Fatal(err)
	}
	done, err := r.exec.Run(r.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v (stream %v)", done, err, r.types(c.ID))
	}
	r.checkOneOutcome(c.ID)
}

// A stream that keeps flowing for three leases is delivered in full and
// recorded, billed, once.
func TestStreamOutlivingTheLeaseIsBilled(t *testing.T) {
	t.Parallel()
	pieces := make([]string, 16)
	for i := range pieces {
		pieces[i] = fmt.Sprintf(`"w%d "`, i)
	}
	r, _ := newLeaseRig(t, llmtest.Script{Pieces: pieces, Gap: 200 * time.Millisecond})
	c := r.request("chatcmpl-longstream", events.ModeSync, "api:a")
	var got []string
	done, err := r.exec.RunStream(r.ctx, events.Metadata{}, c, func(chunk json.RawMessage) error {
		got = append(got, string(chunk))
		return nil
	})
	if err != nil {
		t.Fatalf("RunStream: %v (stream %v)", err, r.types(c.ID))
	}
	s := done.Succeeded
	if s == nil || s.Interrupted != "" || s.CostNanoUSD == 0 || s.Usage.CompletionTokens != int64(len(pieces)) {
		t.Fatalf("outcome %+v", done)
	}
	if !strings.Contains(strings.Join(got, ""), `"w15 "`) {
		t.Fatalf("the client did not get the whole stream: %v", got)
	}
	r.checkOneOutcome(c.ID)
}

// An executor that stops renewing (its process died after the claim) is
// still reaped once its lease ran out.
func TestSilentClaimIsStillReaped(t *testing.T) {
	t.Parallel()
	r, _ := newLeaseRig(t, llmtest.Script{})
	c := r.request("chatcmpl-silent", events.ModeSync, "api:gone")
	claimed := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := r.svc.Completion(r.ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status == completion.StatusAbandoned {
			// A figure, not an assertion: lease + interval + read-model lag.
			t.Logf("reaped %s after the claim (lease %s, reaper every %s)", time.Since(claimed).Round(10*time.Millisecond), shortLease, reaperInterval)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reaped: %v", r.types(c.ID))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The executor, had it only been slow, finds its outcome refused, and
	// says its claim was lost.
	_, err := r.exec.Run(r.ctx, events.Metadata{}, c)
	if !errors.Is(err, domainerr.ErrClaimLost) {
		t.Fatalf("late Run: %v, want ErrClaimLost", err)
	}
	if typs := r.types(c.ID); slices.Contains(typs, events.TypeCompletionSucceeded) {
		t.Fatalf("late outcome recorded after the abandonment: %v", typs)
	}
}

// A stream that stops making progress (its client stopped reading, so the
// executor is stuck handing it a chunk) stops renewing: the reaper ends
// it, and when the executor comes unstuck it learns its claim was lost,
// stops, and records nothing.
func TestStalledStreamIsReaped(t *testing.T) {
	t.Parallel()
	pieces := []string{`"one "`, `"two "`, `"three "`, `"four "`, `"five "`, `"six"`}
	r, _ := newLeaseRig(t, llmtest.Script{Pieces: pieces, Gap: 50 * time.Millisecond})
	c := r.request("chatcmpl-stalled", events.ModeSync, "api:a")
	n := 0
	done, err := r.exec.RunStream(r.ctx, events.Metadata{}, c, func(json.RawMessage) error {
		n++
		if n == 3 {
			// The client is stuck until the reaper has ended the claim.
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				if cur, err := r.svc.Completion(r.ctx, c.ID); err == nil && cur.Status == completion.StatusAbandoned {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return nil
	})
	if !errors.Is(err, domainerr.ErrClaimLost) {
		t.Fatalf("RunStream: %+v, %v; want ErrClaimLost", done, err)
	}
	typs := r.types(c.ID)
	if !slices.Contains(typs, events.TypeCompletionAbandoned) || slices.Contains(typs, events.TypeCompletionSucceeded) {
		t.Fatalf("stream of %s: %v; want it abandoned, with no success", c.ID, typs)
	}
}

// A renewal whose call gave up but which committed anyway (a slow store)
// leaves the executor holding an older version: its outcome conflicts with
// its own renewal, not a reaper's abandonment, and is recorded on the
// fresh state, once.
func TestOwnLateRenewalIsNotALostClaim(t *testing.T) {
	t.Parallel()
	r, _ := newLeaseRig(t, llmtest.Script{})
	c := r.request("chatcmpl-ownrenewal", events.ModeSync, "api:a")
	if _, err := r.svc.RenewClaim(r.ctx, events.Metadata{}, c, completion.RenewLease{Executor: "api:a", Now: time.Now(), Lease: shortLease}); err != nil {
		t.Fatal(err)
	}
	r.renewed.Add(1) // it stands for the executor's own
	// c is the state before the renewal.
	done, err := r.exec.Run(r.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v", done, err)
	}
	r.checkOneOutcome(c.ID)
}
