package execution_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/usage"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/admission"
	"github.com/tollgate/tollgate/quota/memory"
	quotastate "github.com/tollgate/tollgate/quota/state"
)

// retryRig is a whole worker side on a real database: a provider that
// counts its calls, an executor whose process "dies" before recording, a
// healthy one behind bus workers, the quota limiter with its settler, the
// read models and reapers, all on one clock the test moves.
type retryRig struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	store   *pgstore.Store
	svc     *commands.Service
	dead    *execution.Executor
	healthy *execution.Executor
	limiter *memory.Limiter
	admit   *admission.Admitter
	model   config.Model
	settle  func(context.Context, completion.Completion)
	// reserved is what admission reserved for the last request.
	reserved money.NanoUSD
	set      *projections.Set
	up       *llmtest.Upstream
	nowNS    atomic.Int64
	t0       time.Time
	lease    time.Duration
}

const (
	rigAccount = "acc_1"
	rigKey     = "key_1"
)

func newRetryRig(t *testing.T) *retryRig {
	t.Helper()
	r := &retryRig{t: t, ctx: context.Background(), lease: time.Minute}
	r.up = llmtest.NewUpstream(t, 0)
	cfg := llmtest.Config(t, r.up.URL, "1000", "2000", "jobs: {on_expired_lease: retry, max_retries: 2, lease: 1m, reaper_interval: 1s}\nquota: {reservation_ttl: 30m}")
	var err error
	r.pool, _ = pgtest.NewPool(t)
	if r.store, err = pgstore.New(r.pool, nil); err != nil {
		t.Fatal(err)
	}
	router, err := llm.NewRouter(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.t0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	r.nowNS.Store(r.t0.UnixNano())
	plans := func(string) bool { return true }
	r.svc = commands.NewService(r.store, plans, r.now)
	r.limiter = memory.New(quotastate.Seeder(r.pool))
	r.admit = admission.New(admission.Config{Config: cfg, Service: r.svc, Limiter: r.limiter, Now: r.now})
	r.model, _ = cfg.Model("m")
	r.settle = admission.Settler(cfg, r.svc, r.limiter, slog.New(slog.DiscardHandler), r.now)
	if r.dead, err = execution.New(execution.Config{Service: commands.NewService(dyingStore{r.store}, plans, r.now), LLM: router,
		Models: cfg.Model, Lease: r.lease, Now: r.now, Settled: r.settle}); err != nil {
		t.Fatal(err)
	}
	if r.healthy, err = execution.New(execution.Config{Service: r.svc, LLM: router, Models: cfg.Model, Lease: r.lease, Now: r.now, Settled: r.settle}); err != nil {
		t.Fatal(err)
	}
	if r.set, err = projections.NewSet(r.pool, projections.LiveSchema, nil, nil, jobs.New(projections.LiveSchema),
		usage.New(projections.LiveSchema), quotastate.New(projections.LiveSchema)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.CreateAccount(r.ctx, events.Metadata{}, account.CreateAccount{AccountID: rigAccount, Name: "Acme", Email: "ops@acme.example", Plan: "free"}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *retryRig) now() time.Time { return time.Unix(0, r.nowNS.Load()).UTC() }

func (r *retryRig) at(d time.Duration) { r.nowNS.Store(r.t0.Add(d).UnixNano()) }

// request admits a request as the API does (admission's worst case of
// its body, reserved in the limiter) and records it with its reservation.
// The worst case is far above what the provider's answer (3 prompt and 2
// completion tokens at the model's price) costs.
func (r *retryRig) request(id, mode string, claim *completion.StartCompletion) completion.Completion {
	r.t.Helper()
	body := json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	adm, err := r.admit.Admit(r.ctx, admission.Principal{AccountID: rigAccount, KeyID: rigKey, Plan: "free"}, r.model, id, body)
	if err != nil || !adm.Decision.Allowed {
		r.t.Fatalf("admit %s: %+v, %v", id, adm, err)
	}
	r.reserved = adm.Admission.Cost
	c, err := r.svc.RequestCompletion(r.ctx, events.Metadata{AccountID: rigAccount, CorrelationID: "req_" + id}, completion.RequestCompletion{
		CompletionID: id, AccountID: rigAccount, KeyID: rigKey, Model: "m", Mode: mode,
		Request: body, Reservation: adm.Reservation,
	}, claim)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// die claims id for a worker that calls the provider and dies before
// recording the outcome, and returns the state that worker held.
func (r *retryRig) die(id, executor string) completion.Completion {
	r.t.Helper()
	c, err := r.dead.Claim(r.ctx, events.Metadata{}, id, executor)
	if err != nil {
		r.t.Fatalf("dying claim of %s: %v", id, err)
	}
	if _, err := r.dead.Run(r.ctx, events.Metadata{}, c); !errors.Is(err, errDied) {
		r.t.Fatalf("dying run of %s: err = %v, want the simulated death", id, err)
	}
	return c
}

// project brings the read models up to date with the streams.
func (r *retryRig) project(ids ...string) {
	r.t.Helper()
	for _, id := range ids {
		evs, err := r.store.Load(r.ctx, completion.CompletionStream(id))
		if err != nil {
			r.t.Fatal(err)
		}
		for _, e := range evs {
			if err := r.set.Handle(r.ctx, e); err != nil {
				r.t.Fatal(err)
			}
		}
	}
}

func (r *retryRig) reaper(instance string) *execution.Reaper {
	r.t.Helper()
	rp, err := execution.NewReaper(execution.ReaperConfig{
		Service: r.svc, Instance: instance, Now: r.now, Retry: true, MaxRetries: 2, Lease: r.lease, Released: r.settle,
		Expired: func(ctx context.Context, now time.Time, limit int) ([]string, error) {
			return jobs.ExpiredLeases(ctx, r.pool, now, limit)
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return rp
}

func (r *retryRig) stream(id string) ([]events.Envelope, []string) {
	r.t.Helper()
	evs, err := r.store.Load(r.ctx, completion.CompletionStream(id))
	if err != nil {
		r.t.Fatal(err)
	}
	typs := make([]string, len(evs))
	for i, e := range evs {
		typs[i] = e.Type
	}
	return evs, typs
}

// limiterBudget is what the limiter holds reserved and spent today for
// the account.
func (r *retryRig) limiterBudget() quota.Budget {
	r.t.Helper()
	u, err := r.limiter.Peek(r.ctx, rigAccount, rigKey, r.now())
	if err != nil {
		r.t.Fatal(err)
	}
	return u.Account.Day
}

// readModelBudget is the quota_state row of the account's day.
func (r *retryRig) readModelBudget() (spent, reserved int64) {
	r.t.Helper()
	rows, err := quotastate.Of(r.ctx, r.pool, rigAccount)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, row := range rows {
		if row.Scope == "account" && row.Period == "day:2026-03-14" {
			return row.Spent, row.Reserved
		}
	}
	r.t.Fatalf("no account day row in %+v", rows)
	return 0, 0
}

// A worker killed mid-call: after its lease the reaper requeues the job, a
// second worker takes it from the bus and succeeds. One outcome, one
// ledger row, one settlement; the provider was called once per run, and a
// redelivered requeue message runs nothing more.
func TestReaperRequeuesDeadWorkersJobOnce(t *testing.T) {
	t.Parallel()
	r := newRetryRig(t)
	const id = "chatcmpl-requeue"
	r.request(id, events.ModeAsync, nil)
	deadClaim := r.die(id, "worker:dead")
	r.project(id)
	if r.up.Calls() != 1 {
		t.Fatalf("provider called %d times, want 1", r.up.Calls())
	}

	reaper := r.reaper("a")
	r.at(59 * time.Second)
	if got, err := reaper.RunOnce(r.ctx); err != nil || len(got) != 0 {
		t.Fatalf("pass before expiry: %v, %v", got, err)
	}
	r.at(61 * time.Second)
	if got, err := reaper.RunOnce(r.ctx); err != nil || !slices.Equal(got, []string{id}) {
		t.Fatalf("pass after expiry: %v, %v; want [%s]", got, err, id)
	}
	// Before the read model catches up, a second pass finds it queued.
	if got, err := reaper.RunOnce(r.ctx); err != nil || len(got) != 0 {
		t.Fatalf("second pass: %v, %v; want nothing", got, err)
	}
	r.project(id)
	if ids, err := jobs.ExpiredLeases(r.ctx, r.pool, r.now().Add(time.Hour), 10); err != nil || len(ids) != 0 {
		t.Fatalf("expired leases after the requeue: %v, %v", ids, err)
	}
	// The reservation is still held, in the limiter and the read model.
	if b := r.limiterBudget(); b.Reserved != r.reserved || b.Spent != 0 {
		t.Errorf("limiter after the requeue: %+v", b)
	}
	if spent, res := r.readModelBudget(); res != int64(r.reserved) || spent != 0 {
		t.Errorf("quota_state after the requeue: spent %d reserved %d", spent, res)
	}
	evs, typs := r.stream(id)
	rq := evs[len(evs)-1]
	if rq.Type != events.TypeCompletionRequeued || !bus.IsJob(rq) || rq.Metadata.AccountID != rigAccount || rq.Metadata.Actor != "reaper:a" {
		t.Fatalf("stream = %v, last %+v", typs, rq.Metadata)
	}
	d, err := events.Decode(rq)
	if err != nil {
		t.Fatal(err)
	}
	if q := d.(events.CompletionRequeued); q.Executor != "worker:dead" || q.Retry != 1 || !q.LeaseExpiresAt.Equal(r.t0.Add(time.Minute)) ||
		q.AccountID != rigAccount || q.KeyID != rigKey || q.Model != "m" || q.Reason != "lease_expired" {
		t.Errorf("requeued = %+v", q)
	}

	// The requeue message reaches two workers at once (a redelivery): one
	// claims and runs it, the other drops its copy.
	r.at(70 * time.Second)
	workerCtx, stop := context.WithCancel(r.ctx)
	defer stop()
	w1 := bus.NewWorker(workerCtx, r.healthy, "w1", 2, nil)
	w2 := bus.NewWorker(workerCtx, r.healthy, "w2", 2, nil)
	var wg sync.WaitGroup
	for _, w := range []*bus.Worker{w1, w2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := bus.ToMessage(rq)
			if err != nil {
				t.Error(err)
				return
			}
			if err := w.Handle(m); err != nil {
				t.Errorf("handle: %v", err)
			}
		}()
	}
	wg.Wait()
	w1.Wait()
	w2.Wait()
	// Redelivered once more after the retry finished: nothing runs.
	m, err := bus.ToMessage(rq)
	if err != nil {
		t.Fatal(err)
	}
	if err := w1.Handle(m); err != nil {
		t.Fatal(err)
	}
	w1.Wait()
	if r.up.Calls() != 2 {
		t.Fatalf("provider called %d times, want 2 (the dead worker and the retry)", r.up.Calls())
	}

	evs, typs = r.stream(id)
	want := []string{events.TypeCompletionRequested, events.TypeQuotaReserved, events.TypeCompletionStarted, events.TypeCompletionRequeued,
		events.TypeCompletionStarted, events.TypeCompletionSucceeded, events.TypeQuotaSettled}
	if !slices.Equal(typs, want) {
		t.Fatalf("timeline = %v\nwant       %v", typs, want)
	}
	c, err := completion.FoldCompletion(evs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != completion.StatusSucceeded || c.Retries != 1 || (c.Executor != "worker:w1" && c.Executor != "worker:w2") {
		t.Errorf("completion: status %s retries %d executor %s", c.Status, c.Retries, c.Executor)
	}
	cost := c.Succeeded.CostNanoUSD
	if cost <= 0 || cost >= int64(r.reserved) {
		t.Fatalf("cost %d", cost)
	}
	// The dead worker's outcome, were it to come back, is refused: the
	// stream moved on from the state its claim left.
	if _, err := r.svc.FinishClaimed(r.ctx, events.Metadata{}, deadClaim, completion.FinishCompletion{Executor: "worker:dead",
		Succeeded: &events.CompletionSucceeded{Provider: "up", UpstreamModel: "m", Response: json.RawMessage(`{}`)}}); !errors.Is(err, events.ErrConflict) {
		t.Errorf("late outcome of the dead worker: err = %v, want a conflict", err)
	}

	r.project(id)
	var rows int
	var ledgerCost int64
	if err := r.pool.QueryRow(r.ctx, `SELECT count(*), coalesce(sum(cost_nano_usd), 0)::bigint FROM usage_ledger WHERE completion_id = $1`, id).
		Scan(&rows, &ledgerCost); err != nil || rows != 1 || ledgerCost != cost {
		t.Errorf("usage_ledger: %d rows costing %d (%v), want 1 costing %d", rows, ledgerCost, err, cost)
	}
	var status string
	if err := r.pool.QueryRow(r.ctx, `SELECT status FROM jobs WHERE completion_id = $1`, id).Scan(&status); err != nil || status != jobs.JobSucceeded {
		t.Errorf("job status %q, %v", status, err)
	}
	// Settled once: the real cost is spent, nothing stays reserved, in the
	// limiter and in the read model.
	if b := r.limiterBudget(); b.Reserved != 0 || b.Spent != money.NanoUSD(cost) {
		t.Errorf("limiter after the retry: %+v, want spent %d", b, cost)
	}
	if spent, res := r.readModelBudget(); res != 0 || spent != cost {
		t.Errorf("quota_state after the retry: spent %d reserved %d, want %d and 0", spent, res, cost)
	}
}

// Retries used up: the next expiry abandons, and the reservation is
// released. A synchronous request is abandoned at once.
func TestReaperAbandonsWhenRetriesAreExhausted(t *testing.T) {
	t.Parallel()
	r := newRetryRig(t)
	const id = "chatcmpl-exhausted"
	r.request(id, events.ModeAsync, nil)
	reaper := r.reaper("a")
	// Three runs (the first and max_retries 2), each dying.
	for run := range 3 {
		r.die(id, fmt.Sprintf("worker:dead%d", run))
		r.project(id)
		r.at(time.Duration(run+1) * 2 * time.Minute)
		got, err := reaper.RunOnce(r.ctx)
		if err != nil || !slices.Equal(got, []string{id}) {
			t.Fatalf("pass %d: %v, %v", run, got, err)
		}
		r.project(id)
		c, err := r.svc.Completion(r.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus := completion.StatusQueued
		if run == 2 {
			wantStatus = completion.StatusAbandoned
		}
		if c.Status != wantStatus || c.Retries != min(run+1, 2) {
			t.Fatalf("after pass %d: status %s retries %d", run, c.Status, c.Retries)
		}
		if run < 2 {
			if b := r.limiterBudget(); b.Reserved != r.reserved {
				t.Errorf("limiter after requeue %d: %+v", run+1, b)
			}
		}
	}
	if r.up.Calls() != 3 {
		t.Errorf("provider called %d times, want 3", r.up.Calls())
	}
	_, typs := r.stream(id)
	want := []string{events.TypeCompletionRequested, events.TypeQuotaReserved,
		events.TypeCompletionStarted, events.TypeCompletionRequeued, events.TypeCompletionStarted, events.TypeCompletionRequeued,
		events.TypeCompletionStarted, events.TypeCompletionAbandoned, events.TypeQuotaReleased}
	if !slices.Equal(typs, want) {
		t.Fatalf("timeline = %v\nwant       %v", typs, want)
	}
	// Released in the limiter (by the reaper) and the read model; nothing
	// billed.
	if b := r.limiterBudget(); b.Reserved != 0 || b.Spent != 0 {
		t.Errorf("limiter after abandonment: %+v", b)
	}
	if spent, res := r.readModelBudget(); res != 0 || spent != 0 {
		t.Errorf("quota_state after abandonment: spent %d reserved %d", spent, res)
	}
	var rows int
	if err := r.pool.QueryRow(r.ctx, `SELECT count(*) FROM usage_ledger WHERE completion_id = $1`, id).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("usage_ledger rows %d, %v", rows, err)
	}

	// A synchronous request whose API instance died is abandoned, not
	// requeued: its client is gone.
	const syncID = "chatcmpl-sync"
	c := r.request(syncID, events.ModeSync, r.healthy.StartCommand("api:dead"))
	if c.Status != completion.StatusRunning {
		t.Fatalf("sync request: %+v", c)
	}
	r.project(syncID)
	r.at(time.Hour)
	if got, err := reaper.RunOnce(r.ctx); err != nil || !slices.Equal(got, []string{syncID}) {
		t.Fatalf("sync pass: %v, %v", got, err)
	}
	if _, typs := r.stream(syncID); !slices.Equal(typs, []string{events.TypeCompletionRequested, events.TypeQuotaReserved,
		events.TypeCompletionStarted, events.TypeCompletionAbandoned, events.TypeQuotaReleased}) {
		t.Errorf("sync timeline = %v", typs)
	}
}

// Concurrent reapers requeue a dead claim once between them, and a stale
// reaper repeating an earlier requeue adds nothing.
func TestConcurrentReapersRequeueOnce(t *testing.T) {
	t.Parallel()
	r := newRetryRig(t)
	const id = "chatcmpl-race"
	r.request(id, events.ModeAsync, nil)
	r.die(id, "worker:dead")
	r.project(id)
	r.at(5 * time.Minute)
	var wg sync.WaitGroup
	var total atomic.Int64
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := r.reaper(fmt.Sprintf("r%d", i)).RunOnce(r.ctx)
			if err != nil {
				t.Errorf("reaper %d: %v", i, err)
			}
			total.Add(int64(len(got)))
		}()
	}
	wg.Wait()
	if total.Load() != 1 {
		t.Errorf("reapers requeued %d times, want 1", total.Load())
	}
	_, typs := r.stream(id)
	if !slices.Equal(typs, []string{events.TypeCompletionRequested, events.TypeQuotaReserved, events.TypeCompletionStarted, events.TypeCompletionRequeued}) {
		t.Fatalf("stream = %v", typs)
	}
	// The job is queued: a reaper acting on the stale read model decides
	// nothing (ErrWrongState), and the service refuses it directly too.
	if got, err := r.reaper("late").RunOnce(r.ctx); err != nil || len(got) != 0 {
		t.Errorf("late reaper: %v, %v", got, err)
	}
	if _, _, err := r.svc.ReapExpired(r.ctx, events.Metadata{CorrelationID: "x"}, id, completion.RequeueCompletion{Now: r.now(), MaxRetries: 2, Lease: time.Minute}); !errors.Is(err, domainerr.ErrWrongState) {
		t.Errorf("requeue of a queued job: err = %v", err)
	}
	if _, typs := r.stream(id); len(typs) != 4 {
		t.Errorf("stream grew: %v", typs)
	}
}
