package execution

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/events"
)

// Synchronous runs without a claim before the call. A synchronous request
// is run by the API instance holding the client's connection; nobody else
// can take it, so it needs no claim stored before the provider is called
// (only a queued job is claimed across processes). Its request, budget
// reservation, claim and outcome are appended together once the provider
// answered: one append per completion, before the answer. A run still at
// work after Config.ClaimInlineAfter stores its request and claim on
// their own (the keeper does, before its first renewal), and from then on
// is an ordinary claimed run: its lease is renewed, the reaper ends it if
// this process dies, its job can be looked up, and it is answered 202
// past the response deadline. A stream stores its request and claim while
// it opens (overlapping the provider's time to first token), before its
// first chunk reaches the client. A process that dies before that stores
// nothing of the request: the client got no answer and nothing is billed;
// the budget reservation ends with its TTL (quota.reservation_ttl).

// ErrNotStored: a synchronous run ended and nothing of it was stored,
// and nothing will be (the store refused the append before anything was
// sent): nothing is billed, and the caller releases its reservation.
var ErrNotStored = errors.New("execution: the request and its outcome could not be stored; nothing was recorded or billed")

// Inline is a synchronous request prepared to run: decided, claimed by
// its executor, not stored yet.
type Inline struct {
	x      *Executor
	md     events.Metadata
	in     *commands.Inline
	mu     sync.Mutex
	stored bool
}

// Prepare decides a synchronous request and its inline claim by executor,
// storing nothing (see RunInline).
func (x *Executor) Prepare(md events.Metadata, cmd completion.RequestCompletion, executor string) (*Inline, error) {
	in, err := x.cfg.Service.DecideInline(md, cmd, *x.StartCommand(executor))
	if err != nil {
		return nil, err
	}
	return &Inline{x: x, md: md, in: in}, nil
}

// State is the prepared completion: running, claimed, possibly not stored.
func (p *Inline) State() completion.Completion { return p.in.State }

// isStored reports whether the request and claim are stored.
func (p *Inline) isStored() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stored
}

// markStored records that the stream exists (found by a conflict).
func (p *Inline) markStored() {
	p.mu.Lock()
	p.stored = true
	p.mu.Unlock()
}

// Store appends the request and claim on their own, once: afterwards
// the run is an ordinary claimed run, and its job exists. A stream found
// there already (the run's own outcome, or an earlier Store whose answer
// was lost) counts as stored: only this run writes a new completion's
// stream. An append that failed without an answer is read back.
func (p *Inline) Store(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stored {
		return nil
	}
	_, err := p.x.cfg.Service.StoreInline(ctx, p.in)
	switch {
	case err == nil, errors.Is(err, events.ErrConflict):
		p.stored = true
		return nil
	case p.x.cfg.Transient(err):
		if _, rerr := p.x.read(context.WithoutCancel(ctx), p.in.State.ID, renewTimeout); rerr == nil {
			p.stored = true
			return nil
		}
	}
	return fmt.Errorf("store the request of %s: %w", p.in.State.ID, err)
}

// storeAsync starts Store (bounded by renewTimeout) and returns what
// waits for its end; on a nil p it stores nothing.
func (p *Inline) storeAsync(ctx context.Context) func() error {
	if p == nil {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), renewTimeout)
		defer cancel()
		done <- p.Store(sctx)
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = <-done })
		return err
	}
}

// RunInline executes a prepared synchronous completion and records it
// (see Run): with its request and claim in the outcome's append when it
// ended before Config.ClaimInlineAfter. ErrNotStored: nothing was stored.
func (x *Executor) RunInline(ctx context.Context, p *Inline) (completion.Completion, error) {
	return x.run(ctx, p.md, p.in.State, p)
}

// StreamInline executes a prepared synchronous completion as a stream
// (see RunStream and RunInline).
func (x *Executor) StreamInline(ctx context.Context, p *Inline, emit func(chunk json.RawMessage) error) (completion.Completion, error) {
	return x.runStream(ctx, p.md, p.in.State, p, emit)
}

// finishInline appends p's request, claim and outcome in one append.
func (x *Executor) finishInline(ctx context.Context, md events.Metadata, p *Inline, finish completion.FinishCompletion) (completion.Completion, error) {
	return x.cfg.Service.FinishInline(ctx, md, p.in, finish)
}
