package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
)

// GroupCommitConfig configures group commit: concurrent appends share one
// INSERT statement, so one transaction and one commit (one WAL flush), and
// each caller is answered once that statement has committed. A lone append
// goes at once, alone; while groups are in flight new appends queue, and
// the next group takes them all, up to the bounds.
type GroupCommitConfig struct {
	// Disabled makes every append a statement of its own.
	Disabled bool
	// MaxAppends bounds the appends of one group (default 64).
	MaxAppends int
	// MaxEvents bounds the events of one group (default 1024); an append
	// of more goes in a group of its own.
	MaxEvents int
	// MaxInFlight bounds the groups sent at once, each on a connection of
	// its own (default 2).
	MaxInFlight int
}

func (c *GroupCommitConfig) setDefaults() {
	if c.MaxAppends == 0 {
		c.MaxAppends = 64
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = 1024
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 2
	}
}

// Validate reports a bound below 1 (after defaults).
func (c GroupCommitConfig) Validate() error {
	if c.MaxAppends < 1 || c.MaxEvents < 1 || c.MaxInFlight < 1 {
		return fmt.Errorf("pgstore: group commit: MaxAppends (%d), MaxEvents (%d) and MaxInFlight (%d) must be at least 1",
			c.MaxAppends, c.MaxEvents, c.MaxInFlight)
	}
	return nil
}

// outcomeUnknownError is the answer to a caller that stopped waiting for
// an append its group had sent: the statement may still commit.
type outcomeUnknownError struct{ cause error }

func (e *outcomeUnknownError) Error() string {
	return "sent, outcome unknown: " + e.cause.Error()
}

func (e *outcomeUnknownError) Unwrap() error { return e.cause }

// state is where a pending append is; committer.mu guards it.
type state uint8

const (
	queued    state = iota // waiting for a group
	taken                  // in a group waiting for its connection: its caller may still withdraw it
	sent                   // in a group's statement: it may land
	answered               // its result is in done
	withdrawn              // its caller gave up before it was sent: it never will be
)

// pending is an append waiting for its group.
type pending struct {
	ctx     context.Context
	version int64
	out     []events.Envelope // numbered; positions set on success
	md      []string
	state   state
	done    chan groupResult // buffered: answering never blocks
}

// groupResult answers a pending append: its stored events, an error, or
// fallback (the group failed as a whole and stored nothing: append alone
// for the exact answer).
type groupResult struct {
	out      []events.Envelope
	err      error
	fallback bool
}

// committer forms the groups and sends them, each from a goroutine of its
// own that takes the next group when its statement is done and ends when
// none is queued.
type committer struct {
	pool      *pgxpool.Pool
	cfg       GroupCommitConfig
	sizes     prometheus.Histogram
	fallbacks prometheus.Counter

	mu       sync.Mutex
	queue    []*pending
	inFlight int // goroutines sending groups
}

func newCommitter(pool *pgxpool.Pool, cfg GroupCommitConfig) *committer {
	return &committer{
		pool: pool,
		cfg:  cfg,
		sizes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_eventstore_append_group_size",
			Help:    "Appends sharing one statement and commit (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_eventstore_append_group_fallbacks_total",
			Help: "Groups that stored nothing (a conflict, a retry or a failed version check in one of their appends) and whose appends were each retried alone.",
		}),
	}
}

// append queues an append of evs at streamID from version+1 and waits for
// its group's answer, or for ctx to end.
func (c *committer) append(ctx context.Context, streamID string, version int64, evs []events.Envelope) groupResult {
	if err := ctx.Err(); err != nil {
		return groupResult{err: err}
	}
	out, md, err := number(streamID, version, evs)
	if err != nil {
		return groupResult{err: err}
	}
	p := &pending{ctx: ctx, version: version, out: out, md: md, done: make(chan groupResult, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	lead := c.inFlight < c.cfg.MaxInFlight
	if lead {
		c.inFlight++
	}
	c.mu.Unlock()
	if lead {
		go c.lead()
	}
	select {
	case res := <-p.done:
		return res
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch p.state {
	case answered:
		return <-p.done
	case sent:
		return groupResult{err: &outcomeUnknownError{cause: ctx.Err()}}
	default:
		p.state = withdrawn
		return groupResult{err: ctx.Err()}
	}
}

// alone takes a place in flight for an append to go at once, alone and in
// its caller's goroutine, when no group is queued and a place is free (a
// lone append waits for nothing); it returns the function that gives the
// place back.
func (c *committer) alone() (func(), bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inFlight >= c.cfg.MaxInFlight || len(c.queue) > 0 {
		return nil, false
	}
	c.inFlight++
	c.sizes.Observe(1)
	return c.done, true
}

// done gives back a place in flight taken by alone, or sends the appends
// that queued meanwhile.
func (c *committer) done() {
	c.mu.Lock()
	lead := len(c.queue) > 0
	if !lead {
		c.inFlight--
	}
	c.mu.Unlock()
	if lead {
		go c.lead()
	}
}

// lead sends groups while appends are queued.
func (c *committer) lead() {
	for {
		c.mu.Lock()
		g := c.takeLocked(nil, taken)
		if len(g) == 0 {
			c.inFlight--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.commit(g)
	}
}

// takeLocked moves queued appends into g, in arrival order and within the
// bounds, marking them s.
func (c *committer) takeLocked(g []*pending, s state) []*pending {
	n := 0
	for _, p := range g {
		n += len(p.out)
	}
	i := 0
	for ; i < len(c.queue) && len(g) < c.cfg.MaxAppends; i++ {
		p := c.queue[i]
		if p.state == withdrawn {
			c.queue[i] = nil
			continue
		}
		if len(g) > 0 && n+len(p.out) > c.cfg.MaxEvents {
			break
		}
		p.state, n = s, n+len(p.out)
		g, c.queue[i] = append(g, p), nil
	}
	if i == len(c.queue) {
		c.queue = c.queue[:0]
	} else {
		c.queue = c.queue[i:]
	}
	return g
}

// commit sends group g once it has a connection (topped up with what
// queued meanwhile, less what was withdrawn) and answers its appends.
func (c *committer) commit(g []*pending) {
	ctx, stop := whileAnyWaits(g)
	conn, err := c.pool.Acquire(ctx)
	stop()
	c.mu.Lock()
	g = slices.DeleteFunc(g, func(p *pending) bool { return p.state == withdrawn })
	if err == nil {
		for _, p := range g {
			p.state = sent
		}
		g = c.takeLocked(g, sent)
	}
	c.mu.Unlock()
	if err != nil {
		c.answer(g, func(*pending) groupResult { return groupResult{err: fmt.Errorf("acquire a connection: %w", err)} })
		return
	}
	defer conn.Release()
	if len(g) == 0 {
		return
	}
	c.sizes.Observe(float64(len(g)))
	ctx, stop = whileAnyWaits(g)
	defer stop()
	// One order for every group (streams, then versions), so concurrent
	// groups that contend for the same keys wait for each other in the
	// same order instead of deadlocking.
	slices.SortFunc(g, func(a, b *pending) int {
		return cmp.Or(strings.Compare(a.out[0].StreamID, b.out[0].StreamID), cmp.Compare(a.version, b.version))
	})
	n := 0
	for _, p := range g {
		n += len(p.out)
	}
	b := newBatch(n)
	for _, p := range g {
		b.add(p.out, p.md, p.version)
	}
	err = b.insert(ctx, conn)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		first := 0
		c.answer(g, func(p *pending) groupResult {
			b.positions(p.out, first)
			first += len(p.out)
			return groupResult{out: p.out}
		})
	case errors.Is(err, errVersionAhead), errors.As(err, &pgErr) && !Transient(err):
		// The server refused the statement: nothing was stored.
		c.fallbacks.Inc()
		c.answer(g, func(*pending) groupResult { return groupResult{fallback: true} })
	default:
		c.answer(g, func(*pending) groupResult { return groupResult{err: err} })
	}
}

// answer gives each append of g its result.
func (c *committer) answer(g []*pending, result func(*pending) groupResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range g {
		p.state = answered
		p.done <- result(p)
	}
}

// whileAnyWaits returns a context with the values of g's first append
// that ends once the context of every append in g has ended, and the
// function that releases it.
func whileAnyWaits(g []*pending) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(g[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(g)))
	stops := make([]func() bool, len(g))
	for i, p := range g {
		stops[i] = context.AfterFunc(p.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}
