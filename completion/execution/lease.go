package execution

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
)

// Lease renewal. A claim's lease is renewed (completion.lease_renewed,
// appended at the stream's version by the claim holder) once a third of it
// has passed, and again every third, for as long as the execution makes
// progress: a provider call in flight (bounded by the router's deadline),
// a stream whose chunks keep reaching the client. A request shorter than a
// third of the lease appends nothing. A renewal that conflicts means a
// reaper ended the claim: the run is cancelled and its outcome is not
// recorded (the stream holds the abandonment, or the requeue). Recording
// the outcome is progress too: while an outcome append that failed
// without an answer is retried, the lease is renewed when due (resolve,
// in outcome.go), for as long as the store answers renewals.

// renewAfter is the part of the lease after which it is renewed: with a
// third, two thirds of a lease are left for a slow append, a paused
// process or clock skew before a reaper may act.
const renewAfter = 3

// renewTimeout bounds one renewal's append (a third of the lease when
// that is shorter).
const renewTimeout = 10 * time.Second

// errClaimLost is the run's cancellation cause when its claim was lost.
var errClaimLost = errors.New("execution: the claim was lost")

// keeper renews one claim's lease while its run makes progress.
type keeper struct {
	x       *Executor
	md      events.Metadata
	cancel  context.CancelCauseFunc
	stopped chan struct{}
	done    chan struct{}
	timer   *time.Timer

	// p, for a synchronous run, stores its request and claim before the
	// first renewal (at Config.ClaimInlineAfter).
	p *Inline

	mu   sync.Mutex
	c    completion.Completion
	lost error

	// gated: renew only after progress (an open stream); progress counts
	// the chunks delivered.
	gated    atomic.Bool
	progress atomic.Int64
}

// keep starts renewing c's lease and returns the keeper and the run's
// context, which ends when the claim is lost.
func (x *Executor) keep(ctx context.Context, md events.Metadata, c completion.Completion, p *Inline) (*keeper, context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	k := &keeper{x: x, md: md, cancel: cancel, c: c, p: p, stopped: make(chan struct{}), done: make(chan struct{})}
	// No goroutine until the first renewal (or the store of an inline
	// claim) is due: a short request costs a timer and a context.
	bg := context.WithoutCancel(ctx)
	first := k.untilDue()
	if p != nil {
		first = min(first, x.cfg.ClaimInlineAfter)
	}
	k.timer = time.AfterFunc(first, func() { k.loop(bg) })
	return k, ctx
}

// untilDue is the time left until the lease is to be renewed: when two
// thirds of it are left.
func (k *keeper) untilDue() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	lease := k.x.cfg.Lease
	return max(k.c.LeaseExpiresAt.Sub(k.x.cfg.Now())-lease*(renewAfter-1)/renewAfter, 0)
}

// touch records progress (a chunk delivered).
func (k *keeper) touch() { k.progress.Add(1) }

// gate makes renewals wait for progress: from now on a renewal needs a
// touch since the previous one (a stream opened: its chunks must flow).
func (k *keeper) gate() {
	k.touch()
	k.gated.Store(true)
}

// stop ends the renewals and returns the claim as last renewed, or the
// error that lost it. It waits for a renewal in flight.
func (k *keeper) stop() (completion.Completion, error) {
	close(k.stopped)
	if !k.timer.Stop() {
		<-k.done // the renewals had started: wait for the one in flight
	}
	k.cancel(nil)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c, k.lost
}

func (k *keeper) loop(ctx context.Context) {
	defer close(k.done)
	lease := k.x.cfg.Lease
	retry := min(lease/10, time.Second)
	if k.p != nil && !k.storeInline(ctx, retry) {
		return
	}
	seen := int64(-1)
	for {
		if !k.pause(k.untilDue()) {
			return
		}
		p := k.progress.Load()
		if k.gated.Load() && p == seen {
			// Nothing flowed since the last renewal: look again soon, and
			// let the lease run out if nothing ever does.
			if !k.pause(retry) {
				return
			}
			continue
		}
		err := k.renew(ctx)
		switch {
		case err == nil:
			seen = p
		case errors.Is(err, domainerr.ErrClaimLost):
			k.cancel(errClaimLost)
			return
		default:
			// The store is unreachable: try again; the lease has two
			// thirds left, and a reaper needs the same store to end it.
			k.x.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "lease renewal failed", slog.String("completion_id", k.c.ID),
				slog.String("error", err.Error()))
			if !k.pause(retry) {
				return
			}
		}
	}
}

// storeInline stores a synchronous run's request and claim, trying
// again every retry while the store fails; false when the keeper was
// stopped first (the outcome's append then carries them).
func (k *keeper) storeInline(ctx context.Context, retry time.Duration) bool {
	for {
		actx, cancel := context.WithTimeout(ctx, min(k.x.cfg.Lease/renewAfter, renewTimeout))
		err := k.p.Store(actx)
		cancel()
		if err == nil {
			return true
		}
		k.x.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "storing a long synchronous request failed", slog.String("completion_id", k.c.ID),
			slog.String("error", err.Error()))
		if !k.pause(retry) {
			return false
		}
	}
}

// pause waits d; false when the keeper was stopped meanwhile.
func (k *keeper) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-k.stopped:
		return false
	case <-t.C:
	}
	select {
	case <-k.stopped:
		return false
	default:
		return true
	}
}

func (k *keeper) renew(ctx context.Context) error {
	k.mu.Lock()
	c := k.c
	k.mu.Unlock()
	// Bounded: the run's end waits for a renewal in flight.
	actx, cancel := context.WithTimeout(ctx, min(k.x.cfg.Lease/renewAfter, renewTimeout))
	defer cancel()
	next, err := k.x.renewClaim(actx, k.md, c)
	if err != nil {
		if errors.Is(err, domainerr.ErrClaimLost) {
			k.mu.Lock()
			k.lost = err
			k.mu.Unlock()
		}
		return err
	}
	k.mu.Lock()
	k.c = next
	k.mu.Unlock()
	return nil
}

// renewClaim renews c's lease (ctx bounds it) and returns the claim as
// renewed, or an error wrapping domainerr.ErrClaimLost when a reaper ended
// it. It counts the renewal and calls the Renewed hook.
func (x *Executor) renewClaim(ctx context.Context, md events.Metadata, c completion.Completion) (completion.Completion, error) {
	next, err := x.cfg.Service.RenewClaim(ctx, md, c, completion.RenewLease{Executor: c.Executor, Now: x.cfg.Now(), Lease: x.cfg.Lease,
		ReservationMargin: x.cfg.ReservationMargin})
	if errors.Is(err, events.ErrConflict) {
		// Either a reaper ended the claim or an earlier renewal of ours
		// committed after its call gave up: the stream says which.
		if fresh, ok := x.stillHeld(ctx, c); ok {
			next, err = fresh, nil
		}
	}
	if err != nil {
		return c, err
	}
	if next.Renewals != c.Renewals {
		x.renewals.WithLabelValues(c.Model, c.Mode).Inc()
		if x.cfg.Renewed != nil {
			x.cfg.Renewed(context.WithoutCancel(ctx), next)
		}
	}
	return next, nil
}

// stillHeld reloads c's stream after a conflict on an append of the
// claim holder's and reports whether the claim still stands: the same
// run (no requeue since), still running, by the same executor. Then the
// conflicting writer was the holder itself (a renewal that committed
// after its call timed out), and the fresh state is the one to append on.
func (x *Executor) stillHeld(ctx context.Context, c completion.Completion) (completion.Completion, bool) {
	fresh, err := x.cfg.Service.Completion(ctx, c.ID)
	if err != nil || fresh.Status != completion.StatusRunning || fresh.Executor != c.Executor || fresh.Retries != c.Retries {
		return c, false
	}
	return fresh, true
}

// claimLost is what the client of a run whose claim was lost gets: the
// reaper released the budget and nothing is billed.
func claimLost(id string, err error) error {
	return fmt.Errorf("record outcome of %s: %w: %w", id, llm.ServiceUnavailable("claim_lost",
		"The request was ended by the server while it ran (its executor stopped renewing its claim); nothing was billed. Send it again."), err)
}
