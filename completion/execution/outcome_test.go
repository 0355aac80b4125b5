package execution_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/pgtest"
)

// What an outage does to the append of a completion's outcome.
type injection int

const (
	// reach: the append reaches the store.
	reach injection = iota
	// drop: the append never reaches the store and fails as timed out
	// (a statement sent to a server that went away).
	drop
	// commitThenTimeout: the append commits, then fails as timed out (a
	// statement timeout that fired as the server applied it).
	commitThenTimeout
	// commitLate: the append fails as timed out and is applied just
	// before the next append of a claim (a paused server resuming: the
	// statement it had received commits after the writer read the
	// stream again).
	commitLate
)

// outageStore is the real store, every call bounded like the server's
// statements (server.Options.QueryTimeout), with inject deciding what
// happens to the n-th append of an outcome (from 1); inject may also
// pause or stop the test's own PostgreSQL. It counts the loads.
type outageStore struct {
	*pgstore.Store
	bound    time.Duration
	inject   func(n int64) injection
	outcomes atomic.Int64
	loads    atomic.Int64
	// claim, when set, decides on a claim's append (completion.started
	// alone, not the inline path's request and claim).
	claim func() injection
	// late is a commitLate append, applied before the next claim's.
	late atomic.Pointer[func()]
}

func (s *outageStore) Load(ctx context.Context, streamID string) ([]events.Envelope, error) {
	s.loads.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.bound)
	defer cancel()
	return s.Store.Load(ctx, streamID)
}

func (s *outageStore) Append(ctx context.Context, streamID string, expected int64, evs ...events.Envelope) ([]events.Envelope, error) {
	ctx, cancel := context.WithTimeout(ctx, s.bound)
	defer cancel()
	inject := func() injection { return reach }
	switch {
	case slices.ContainsFunc(evs, func(e events.Envelope) bool {
		return e.Type == events.TypeCompletionSucceeded || e.Type == events.TypeCompletionFailed
	}):
		inject = func() injection { return s.inject(s.outcomes.Add(1)) }
	case len(evs) == 1 && evs[0].Type == events.TypeCompletionStarted && s.claim != nil:
		inject = s.claim
		if late := s.late.Swap(nil); late != nil {
			(*late)()
		}
	}
	timedOut := fmt.Errorf("append %s: timeout: %w", streamID, context.DeadlineExceeded)
	switch inject() {
	case drop:
		return nil, timedOut
	case commitLate:
		late := func() { _, _ = s.Store.Append(context.WithoutCancel(ctx), streamID, expected, evs...) }
		s.late.Store(&late)
		return nil, timedOut
	case commitThenTimeout:
		if _, err := s.Store.Append(ctx, streamID, expected, evs...); err != nil {
			return nil, err
		}
		return nil, timedOut
	}
	return s.Store.Append(ctx, streamID, expected, evs...)
}

// outcomeRig is a leaseRig whose executor appends through an outageStore
// and counts its Settled calls.
type outcomeRig struct {
	*leaseRig
	flaky   *outageStore
	settled atomic.Int64
}

func newOutcomeRig(t *testing.T, pool *pgxpool.Pool, lease time.Duration, inject func(int64) injection) *outcomeRig {
	t.Helper()
	up := llmtest.NewScripted(t, llmtest.Script{Pieces: []string{`"all "`, `"good"`}})
	o := &outcomeRig{}
	o.leaseRig = newLeaseRigWith(t, llmtest.Config(t, up.URL, "1000", "2000", ""), rigOptions{
		pool: pool, lease: lease,
		wrap: func(s *pgstore.Store) commands.EventStore {
			o.flaky = &outageStore{Store: s, bound: 500 * time.Millisecond, inject: inject}
			return o.flaky
		},
		settled: func(context.Context, completion.Completion) { o.settled.Add(1) },
	})
	return o
}

// requestReserved is request with a budget reservation, so the outcome
// carries its settlement.
func (o *outcomeRig) requestReserved(id, mode, executor string) completion.Completion {
	o.t.Helper()
	var claim *completion.StartCompletion
	if executor != "" {
		claim = o.exec.StartCommand(executor)
	}
	now := time.Now().UTC()
	c, err := o.svc.RequestCompletion(o.ctx, events.Metadata{AccountID: "acc_1", CorrelationID: "req_" + id}, completion.RequestCompletion{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: mode,
		Request:     json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
		Reservation: &events.QuotaReserved{CostNanoUSD: 50_000_000, Tokens: 100, Day: now.Format("2006-01-02"), Month: now.Format("2006-01"), ExpiresAt: now.Add(time.Hour)},
	}, claim)
	if err != nil {
		o.t.Fatal(err)
	}
	o.mu.Lock()
	o.ids = append(o.ids, id)
	o.mu.Unlock()
	return c
}

// count returns how many events of typ id's stream holds.
func (o *outcomeRig) count(id, typ string) int {
	o.t.Helper()
	n := 0
	for _, x := range o.types(id) {
		if x == typ {
			n++
		}
	}
	return n
}

// checkBilledOnce fails unless id's stream holds one success and one
// settlement, no other outcome, the executor settled once, and the usage
// ledger (the read model billing follows) has its one row.
func (o *outcomeRig) checkBilledOnce(id string) {
	o.t.Helper()
	typs := o.types(id)
	if o.count(id, events.TypeCompletionSucceeded) != 1 || o.count(id, events.TypeQuotaSettled) != 1 ||
		o.count(id, events.TypeCompletionAbandoned) != 0 || o.count(id, events.TypeCompletionFailed) != 0 {
		o.t.Fatalf("stream of %s: %v; want one completion.succeeded, one quota.settled, no other outcome", id, typs)
	}
	if n := o.settled.Load(); n != 1 {
		o.t.Errorf("Settled called %d times, want once", n)
	}
	o.waitLedger(id, 1)
}

// waitLedger waits (bounded) until the usage ledger holds want rows for id.
func (o *outcomeRig) waitLedger(id string, want int) {
	o.t.Helper()
	var n int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := o.pool.QueryRow(o.ctx, `SELECT count(*) FROM usage_ledger WHERE completion_id = $1`, id).Scan(&n); err == nil && n == want {
			return
		}
	}
	o.t.Fatalf("usage ledger of %s: %d rows, want %d", id, n, want)
}

// A sync call whose outcome committed while its append timed out answers
// with its result, recorded and billed once; so does a stream.
func TestOutcomeCommittedThenTimedOutIsAnswered(t *testing.T) {
	t.Parallel()
	o := newOutcomeRig(t, nil, 3*time.Second, func(n int64) injection {
		if n == 1 {
			return commitThenTimeout
		}
		return reach
	})
	c := o.requestReserved("chatcmpl-cutoff-sync", events.ModeSync, "api:a")
	done, err := o.exec.Run(o.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil || done.Status != completion.StatusSucceeded {
		t.Fatalf("Run: %+v, %v (stream %v); want the result", done, err, o.types(c.ID))
	}
	o.checkBilledOnce(c.ID)

	o.settled.Store(0)
	o.flaky.outcomes.Store(0)
	s := o.requestReserved("chatcmpl-cutoff-stream", events.ModeSync, "api:a")
	var chunks int
	done, err = o.exec.RunStream(o.ctx, events.Metadata{}, s, func(json.RawMessage) error { chunks++; return nil })
	if err != nil || done.Succeeded == nil || !done.Succeeded.Stream || chunks == 0 {
		t.Fatalf("RunStream: %+v, %v, %d chunks (stream %v); want the stream's end", done, err, chunks, o.types(s.ID))
	}
	o.checkBilledOnce(s.ID)
}

// An outcome whose appends are lost on the way (twice) is appended again
// and recorded once; a first append that succeeds reads nothing back.
func TestOutcomeLostOnTheWayIsAppendedAgain(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	o := newOutcomeRig(t, nil, 3*time.Second, func(n int64) injection {
		if failing.Load() && n <= 2 {
			return drop
		}
		return reach
	})
	c := o.requestReserved("chatcmpl-hot", events.ModeSync, "api:a")
	if done, err := o.exec.Run(o.ctx, events.Metadata{}, c); err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v", done, err)
	}
	if n := o.flaky.loads.Load(); n != 0 {
		t.Errorf("the hot path read %d streams, want none", n)
	}
	o.checkBilledOnce(c.ID)

	o.settled.Store(0)
	o.flaky.outcomes.Store(0)
	failing.Store(true)
	c = o.requestReserved("chatcmpl-dropped", events.ModeSync, "api:a")
	done, err := o.exec.Run(o.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v (stream %v)", done, err, o.types(c.ID))
	}
	if n := o.flaky.outcomes.Load(); n != 3 {
		t.Errorf("%d outcome appends, want 3 (two lost, one that landed)", n)
	}
	o.checkBilledOnce(c.ID)
}

// A worker's claim that committed while its append timed out is the
// worker's: it runs the job, recorded and billed once; a claim lost on
// the way is made again.
func TestClaimThroughATimeoutIsKept(t *testing.T) {
	t.Parallel()
	// commitLate: the worker reads the job still queued, claims it again,
	// and conflicts with its own first claim, applied meanwhile: it is
	// still its claim to run, not someone else's.
	for _, inj := range []injection{commitThenTimeout, drop, commitLate} {
		o := newOutcomeRig(t, nil, 3*time.Second, func(int64) injection { return reach })
		var once atomic.Bool
		o.flaky.claim = func() injection {
			if once.CompareAndSwap(false, true) {
				return inj
			}
			return reach
		}
		id := fmt.Sprintf("chatcmpl-claim-%d", inj)
		o.requestReserved(id, events.ModeAsync, "")
		c, err := o.exec.Claim(o.ctx, events.Metadata{}, id, "worker:w1")
		if err != nil || c.Status != completion.StatusRunning || c.Executor != "worker:w1" {
			t.Fatalf("%d: Claim: %+v, %v (stream %v)", inj, c, err, o.types(id))
		}
		if n := o.count(id, events.TypeCompletionStarted); n != 1 {
			t.Fatalf("%d: stream %v, want one claim", inj, o.types(id))
		}
		done, err := o.exec.Run(o.ctx, events.Metadata{}, c)
		if err != nil || done.Succeeded == nil {
			t.Fatalf("%d: Run: %+v, %v (stream %v)", inj, done, err, o.types(id))
		}
		o.checkBilledOnce(id)
	}
}

// privatePool starts a PostgreSQL of the test's own and returns it and a
// migrated pool on it (short connect timeout, like a serving process's).
func privatePool(t *testing.T) (*pgtest.Cluster, *pgxpool.Pool) {
	t.Helper()
	pg := pgtest.StartCluster(t, pgtest.ClusterOptions{Settings: []string{"synchronous_commit = on"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, pg.CreateDatabase("tollgate")+"&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pg, pool
}

// claimAsync records a queued job and claims it for a worker, as the
// worker pool does, once the jobs read model has it running (so that a
// reaper could find it).
func (o *outcomeRig) claimAsync(id string) completion.Completion {
	o.t.Helper()
	o.requestReserved(id, events.ModeAsync, "")
	c, err := o.exec.Claim(o.ctx, events.Metadata{}, id, "worker:w1")
	if err != nil {
		o.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var status string
		if err := o.pool.QueryRow(o.ctx, `SELECT status FROM jobs WHERE completion_id = $1`, id).Scan(&status); err == nil && status == "running" {
			return c
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("the jobs read model does not show %s running", id)
		}
	}
}

// A queued job whose worker loses PostgreSQL (paused: the append times
// out, and is applied when the server resumes) while recording its
// outcome, with the database back within the lease, is recorded and
// billed once, not abandoned (the reaper abandons expired claims).
func TestAsyncOutcomeThroughAPauseWithinTheLease(t *testing.T) {
	t.Parallel()
	pg, pool := privatePool(t)
	const lease = 3 * time.Second
	o := newOutcomeRig(t, pool, lease, func(n int64) injection {
		if n == 1 {
			pg.Pause()
			time.AfterFunc(lease/2, pg.Resume)
		}
		return reach
	})
	c := o.claimAsync("chatcmpl-paused")
	done, err := o.exec.Run(o.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v (stream %v)", done, err, o.types(c.ID))
	}
	t.Logf("%d outcome appends, %d reads", o.flaky.outcomes.Load(), o.flaky.loads.Load())
	// Long enough for the reaper to have acted on an expired lease.
	time.Sleep(lease)
	o.checkBilledOnce(c.ID)
}

// Likewise with PostgreSQL stopped (connections refused) and started
// again within the lease: the outcome is appended again and recorded.
func TestAsyncOutcomeThroughAStopWithinTheLease(t *testing.T) {
	t.Parallel()
	pg, pool := privatePool(t)
	const lease = 6 * time.Second
	o := newOutcomeRig(t, pool, lease, func(n int64) injection {
		if n == 1 {
			pg.Stop("fast")
			time.AfterFunc(time.Second, pg.Start)
		}
		return reach
	})
	c := o.claimAsync("chatcmpl-stopped")
	done, err := o.exec.Run(o.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v (stream %v)", done, err, o.types(c.ID))
	}
	t.Logf("%d outcome appends, %d reads", o.flaky.outcomes.Load(), o.flaky.loads.Load())
	o.checkBilledOnce(c.ID)
}

// A database that comes back only after the lease ran out finds the
// reaper's abandonment standing: the executor stops appending at the
// lease's end, learns of the abandonment, says its claim was lost (as an
// outage: the API answers 503 database_unavailable), and nothing is billed.
func TestAsyncOutcomeAfterTheLeaseIsAbandoned(t *testing.T) {
	t.Parallel()
	pg, pool := privatePool(t)
	const lease = 2 * time.Second
	o := newOutcomeRig(t, pool, lease, func(n int64) injection {
		if n == 1 {
			pg.Stop("fast")
			time.AfterFunc(lease+time.Second, pg.Start)
		}
		return reach
	})
	c := o.claimAsync("chatcmpl-toolate")
	done, err := o.exec.Run(o.ctx, events.Metadata{}, c)
	if !errors.Is(err, domainerr.ErrClaimLost) {
		t.Fatalf("Run: %+v, %v (stream %v); want ErrClaimLost", done, err, o.types(c.ID))
	}
	// The client's answer is the outage's (503 database_unavailable with
	// Retry-After), not that of an executor that stopped renewing.
	if le := (*llm.Error)(nil); errors.As(err, &le) || !execution.Transient(err) {
		t.Errorf("Run: %v; want the store's failure, not an llm.Error", err)
	}
	if o.count(c.ID, events.TypeCompletionAbandoned) != 1 || o.count(c.ID, events.TypeCompletionSucceeded) != 0 || o.count(c.ID, events.TypeQuotaSettled) != 0 {
		t.Fatalf("stream of %s: %v; want it abandoned, nothing settled", c.ID, o.types(c.ID))
	}
	if n := o.settled.Load(); n != 0 {
		t.Errorf("Settled called %d times, want none", n)
	}
	o.waitLedger(c.ID, 0)
}

// sqlStateError is any driver's error with an SQLSTATE.
type sqlStateError string

func (e sqlStateError) Error() string    { return "sqlstate " + string(e) }
func (e sqlStateError) SQLState() string { return string(e) }

// The driver-free classifier: a store that did not answer, never an answer.
func TestTransientKnowsNoDriver(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("append: %w", context.DeadlineExceeded), true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{sqlStateError("08006"), true},
		{sqlStateError("57P01"), true},
		{sqlStateError("53300"), true},
		{sqlStateError("23505"), false},
		{sqlStateError("22P05"), false},
		{events.ErrConflict, false},
		{errors.New("process died"), false},
	} {
		if got := execution.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
