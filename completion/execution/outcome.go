package execution

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Recording an outcome through an outage. The append of a completion's
// outcome (its completion.succeeded or .failed and the quota settlement)
// can fail without an answer: a statement timeout while the database
// hangs, a connection lost after the statement was sent. Such an append
// may still be applied (a hung server runs the statement it had received
// when it resumes), so its failure says nothing. The executor resolves it:
// it reads the stream again and, when the outcome is there, returns it
// (the client gets its answer, the settlement runs once); when the run is
// still its own, it appends again (the events' ids derive from the stream
// and the run, so an append that did land is found, never doubled). It
// goes on, with a bounded backoff, while the claim's lease lasts,
// renewing the lease when it is due (recording the outcome is progress);
// the lease bounds the appends because past it a reaper may end the run.
// After the lease it only reads, for learnAfterLease more, to tell the
// client which of its outcome and the reaper's ending landed.

// learnAfterLease is how long after the lease's end the executor keeps
// reading a stream whose outcome append failed without an answer, to
// learn whether it landed (a hung server applies it when it resumes).
const learnAfterLease = 30 * time.Second

// Backoff between two attempts of a resolution.
const (
	resolveFirstWait = 100 * time.Millisecond
	resolveMaxWait   = 2 * time.Second
)

// errUnresolved: the outcome append failed without an answer and the
// stream could not be read in time to learn whether it landed.
var errUnresolved = errors.New("execution: the outcome's append failed and its fate could not be learned")

// resolution is what a resolution found out, for the metric.
const (
	resolvedLanded   = "landed"   // the failed append had landed after all
	resolvedAppended = "appended" // an append retried after it landed
	resolvedLost     = "lost"     // a reaper ended the run meanwhile
	resolvedNot      = "unresolved"
)

// resolve settles an outcome append that failed with err, ambiguous or
// unavailable (x.cfg.Transient) or a version conflict: it returns the
// completion with its outcome once the stream has it (done), an error
// wrapping domainerr.ErrClaimLost when a reaper ended the run, or an error
// wrapping err when neither could be learned in time. Only this path,
// never a first append that succeeded, costs extra statements.
//
// With p set and its request not stored yet, a stream found empty gets the
// whole append (request, claim and outcome) again; the events' ids are the
// same, so whichever append landed is found, never doubled.
func (x *Executor) resolve(ctx context.Context, md events.Metadata, c completion.Completion, finish completion.FinishCompletion, err error, p *Inline) (completion.Completion, error) {
	attempt := min(x.cfg.Lease/renewAfter, renewTimeout)
	// Real time, not x.cfg.Now: the waits are real, and a clock a test
	// holds still must not make them endless.
	appendUntil := time.Now().Add(c.LeaseExpiresAt.Sub(x.cfg.Now()))
	wait := min(resolveFirstWait, x.cfg.Lease/10)
	last := err
	for first := true; ; first = false {
		if !first || !errors.Is(err, events.ErrConflict) {
			// A conflict needs no wait: the stream is readable.
			if !pauseFor(min(wait, max(time.Until(appendUntil.Add(learnAfterLease)), 0))) {
				break
			}
			wait = min(2*wait, resolveMaxWait, max(x.cfg.Lease/4, resolveFirstWait))
		}
		if time.Now().After(appendUntil.Add(learnAfterLease)) {
			break
		}
		fresh, rerr := x.read(ctx, c.ID, attempt)
		if p != nil && !p.isStored() && errors.Is(rerr, domainerr.ErrNotFound) {
			// Nothing landed yet: the whole append again.
			done, aerr := x.appendWhole(ctx, md, p, finish, attempt)
			if aerr == nil {
				x.resolved.WithLabelValues(c.Mode, resolvedAppended).Inc()
				return done, nil
			}
			last = aerr
			continue
		}
		if rerr == nil && p != nil {
			p.markStored()
		}
		if rerr != nil {
			if !x.cfg.Transient(rerr) {
				return c, fmt.Errorf("read %s after its outcome's append failed (%w): %w", c.ID, err, rerr)
			}
			last = rerr
			continue
		}
		switch state := runState(c, fresh); {
		case state == runLanded:
			x.resolved.WithLabelValues(c.Mode, resolvedLanded).Inc()
			return fresh, nil
		case state == runLost:
			x.resolved.WithLabelValues(c.Mode, resolvedLost).Inc()
			return c, fmt.Errorf("%w: the stream was ended meanwhile (%s) after the outcome's append failed: %w", domainerr.ErrClaimLost, fresh.Status, err)
		case !time.Now().Before(appendUntil):
			// The lease is over: a reaper may end the run, and
			// will once the store answers; only read on.
			continue
		}
		done, aerr := x.appendOutcome(ctx, md, fresh, finish, attempt)
		switch {
		case aerr == nil:
			x.resolved.WithLabelValues(c.Mode, resolvedAppended).Inc()
			return done, nil
		case errors.Is(aerr, events.ErrConflict):
			// Someone wrote (a reaper, or our own append landing late):
			// the next read says who.
			last = aerr
		case x.cfg.Transient(aerr):
			last = aerr
			if renewed, ok := x.renewDue(ctx, md, fresh, attempt); ok {
				appendUntil = time.Now().Add(renewed.LeaseExpiresAt.Sub(x.cfg.Now()))
			}
		default:
			return c, fmt.Errorf("record outcome of %s again after %w: %w", c.ID, err, aerr)
		}
	}
	x.resolved.WithLabelValues(c.Mode, resolvedNot).Inc()
	x.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "completion outcome unresolved", slog.String("completion_id", c.ID),
		slog.String("error", last.Error()))
	return c, fmt.Errorf("%w: %w (last: %w)", errUnresolved, err, last)
}

// resolveClaim settles a claim (cmd) whose append failed with err, a
// Transient error: it reads the stream again until it answers (with a
// bounded backoff, for as long as the claim's lease and learnAfterLease),
// returns the claim when it landed (its lease's end is one this call set:
// no other claim has it), claims again when the job is still queued (and
// reads again when that claim conflicts or fails without an answer: a
// claim tried before may have landed after the read), and returns
// domainerr.ErrAlreadyClaimed when someone else holds or finished it. ctx
// ending (the message given up) ends it.
func (x *Executor) resolveClaim(ctx context.Context, md events.Metadata, id string, cmd completion.StartCompletion, err error) (completion.Completion, error) {
	attempt := min(x.cfg.Lease/renewAfter, renewTimeout)
	until := time.Now().Add(x.cfg.Lease + learnAfterLease)
	wait := min(resolveFirstWait, x.cfg.Lease/10)
	// The lease ends of the claims tried: each is known by its own.
	mine := []time.Time{cmd.Now.Add(cmd.Lease)}
	for ctx.Err() == nil && pauseFor(min(wait, time.Until(until))) {
		wait = min(2*wait, resolveMaxWait, max(x.cfg.Lease/4, resolveFirstWait))
		fresh, rerr := x.read(ctx, id, attempt)
		switch {
		case rerr != nil && x.cfg.Transient(rerr):
			continue
		case rerr != nil:
			return fresh, fmt.Errorf("read %s after its claim's append failed (%w): %w", id, err, rerr)
		case fresh.Status == completion.StatusRunning && fresh.Executor == cmd.Executor && fresh.Renewals == 0 && slices.ContainsFunc(mine, fresh.LeaseExpiresAt.Equal):
			x.resolved.WithLabelValues(fresh.Mode, "claim_"+resolvedLanded).Inc()
			return fresh, nil
		case fresh.Status == completion.StatusQueued:
			cmd.Now = x.cfg.Now()
			mine = append(mine, cmd.Now.Add(cmd.Lease))
			c, cerr := x.cfg.Service.StartCompletion(ctx, md, id, cmd)
			if cerr == nil || (!errors.Is(cerr, domainerr.ErrAlreadyClaimed) && !x.cfg.Transient(cerr)) {
				return c, cerr
			}
			// A claim tried before may have landed after the read (a
			// resuming server applying the append it had received), or
			// this one without an answer: the next read says whose.
		default:
			return fresh, fmt.Errorf("completion %s is %s by %s after the claim's append failed (%w): %w", id, fresh.Status, fresh.Executor, err, domainerr.ErrAlreadyClaimed)
		}
	}
	x.resolved.WithLabelValues("async", "claim_"+resolvedNot).Inc()
	return completion.Completion{}, fmt.Errorf("%w: claim %s: %w", errUnresolved, id, err)
}

// read loads a completion, bounded by d.
func (x *Executor) read(ctx context.Context, id string, d time.Duration) (completion.Completion, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return x.cfg.Service.Completion(ctx, id)
}

// appendOutcome appends finish on c, bounded by d.
func (x *Executor) appendOutcome(ctx context.Context, md events.Metadata, c completion.Completion, finish completion.FinishCompletion, d time.Duration) (completion.Completion, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return x.cfg.Service.FinishClaimed(ctx, md, c, finish)
}

// appendWhole appends p's request, claim and outcome, bounded by d.
func (x *Executor) appendWhole(ctx context.Context, md events.Metadata, p *Inline, finish completion.FinishCompletion, d time.Duration) (completion.Completion, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	done, err := x.finishInline(ctx, md, p, finish)
	if err == nil {
		p.markStored()
	}
	return done, err
}

// renewDue renews c's lease when a third of it has passed (as the keeper
// would), so that an outcome the store keeps refusing while it answers
// reads is tried for another lease. ok: renewed.
func (x *Executor) renewDue(ctx context.Context, md events.Metadata, c completion.Completion, d time.Duration) (completion.Completion, bool) {
	if c.LeaseExpiresAt.Sub(x.cfg.Now()) > x.cfg.Lease*(renewAfter-1)/renewAfter {
		return c, false
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	next, err := x.renewClaim(ctx, md, c)
	return next, err == nil
}

// pauseFor sleeps d; false when d is not positive (the time is up).
func pauseFor(d time.Duration) bool {
	if d <= 0 {
		return false
	}
	time.Sleep(d)
	return true
}

type runStatus int

const (
	runHeld   runStatus = iota // still running, claimed by c's executor
	runLanded                  // c's run has its outcome
	runLost                    // a reaper ended or requeued c's run
)

// runState says what fresh, c's stream read again, holds of c's run.
// Only the claim holder writes a run's outcome and a requeue starts a new
// run (Retries), so an outcome of the same run is the one c appended.
func runState(c, fresh completion.Completion) runStatus {
	switch {
	case fresh.Retries != c.Retries:
		return runLost
	case fresh.Status == completion.StatusSucceeded || fresh.Status == completion.StatusFailed:
		return runLanded
	case fresh.Status == completion.StatusRunning && fresh.Executor == c.Executor:
		return runHeld
	}
	return runLost
}

// Transient reports whether err, from the event store, is a dependency
// that could not be reached or did not answer in time (a statement whose
// effect is unknown, a connection refused or lost), rather than an answer:
// trying again later may succeed, and a write may have been applied. It
// is Config.Transient's default and knows no driver: a context deadline,
// a network error, an end of stream, and SQLSTATE classes 08 (connection
// exception), 57P01-03 (shutdown, cannot connect now) and 53300 (too many
// connections) from any error with an SQLState method.
func Transient(err error) bool {
	var ne net.Error
	var st interface{ SQLState() string }
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &st):
		code := st.SQLState()
		return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03" || code == "53300"
	}
	return false
}
