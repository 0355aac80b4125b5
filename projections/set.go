package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// SetName is the projection name a Set keeps its per-stream guard under in
// projection_streams.
const SetName = "read_models"

// Set applies its projectors to each event in one transaction, together
// with an idempotency guard: the last version of each stream it applied.
// Delivery is at least once and in order per stream, so an event at or
// below the guard is a redelivery and is skipped, and an event more than
// one above it arrived before its predecessor and is refused with ErrGap.
//
// An Accumulator (the usage ledger, jobs, billing records, the quota
// state) writes a whole transaction's events in a few pipelined
// statements; any other Projector is applied in event order too, but sees
// the Accumulators' models of the transaction's events only after the last
// of them (they are written set-based at the end).
type Set struct {
	pool   *pgxpool.Pool
	schema string
	logger *slog.Logger
	ps     []Projector
	// readers lists, for each registered event type, the indexes in ps of
	// the projectors that read it; all is every index, for other types.
	readers map[string][]int
	all     []int
	// asyncCommit skips waiting for the WAL flush at commit: a rebuild that
	// crashes is simply started again, so it need not be durable per batch.
	asyncCommit bool

	selectGuard, updateGuard, insertGuard string
	// updateExpectedGuard and insertNewGuard store a prepared batch's
	// versions where the guard holds what it expected (see inorder.go).
	updateExpectedGuard, insertNewGuard string

	events   *prometheus.CounterVec
	seconds  prometheus.Histogram
	position prometheus.Gauge
	lag      prometheus.Gauge
	lastPos  atomic.Int64
}

// NewSet returns a Set applying ps to the read models of schema. Its
// metrics carry the schema as a label and are registered on reg when reg
// is not nil.
func NewSet(pool *pgxpool.Pool, schema string, logger *slog.Logger, reg prometheus.Registerer, ps ...Projector) (*Set, error) {
	if pool == nil {
		return nil, errors.New("projections: new set: no pool")
	}
	if schema == "" {
		return nil, errors.New("projections: new set: no schema")
	}
	if len(ps) == 0 {
		return nil, errors.New("projections: new set: no projectors")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	guard := Table(schema, "projection_streams")
	labels := prometheus.Labels{"schema": schema}
	s := &Set{
		pool:   pool,
		schema: schema,
		logger: logger.With("projection", SetName, "schema", schema),
		ps:     ps,
		// FOR UPDATE: a redelivery handled concurrently waits for this
		// transaction and then sees the version it stored. One index
		// lookup per stream, in the order given (sorted, so concurrent
		// batches lock alike), whatever the table's statistics say: the
		// subquery's LIMIT keeps the planner from joining it otherwise
		// (without statistics, a new table's, it scanned every row).
		selectGuard: fmt.Sprintf(`SELECT g.stream_id, g.version FROM unnest($2::text[]) WITH ORDINALITY AS u(s, n)
			CROSS JOIN LATERAL (SELECT stream_id, version FROM %s WHERE projection = $1 AND stream_id = u.s LIMIT 1 FOR UPDATE) g
			ORDER BY u.n`, guard),
		updateGuard: fmt.Sprintf(`UPDATE %s AS g SET version = u.v FROM unnest($2::text[], $3::bigint[]) AS u(s, v)
			WHERE g.projection = $1 AND g.stream_id = u.s`, guard),
		// No ON CONFLICT: when two transactions apply a stream's first
		// event at once, the second fails here and rolls back.
		insertGuard: fmt.Sprintf(`INSERT INTO %s (projection, stream_id, version)
			SELECT $1, s, v FROM unnest($2::text[], $3::bigint[]) AS u(s, v)`, guard),
		updateExpectedGuard: fmt.Sprintf(`UPDATE %s AS g SET version = u.v FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS u(s, v, prev)
			WHERE g.projection = $1 AND g.stream_id = u.s AND g.version = u.prev`, guard),
		insertNewGuard: fmt.Sprintf(`INSERT INTO %s (projection, stream_id, version)
			SELECT $1, s, v FROM unnest($2::text[], $3::bigint[]) AS u(s, v) ON CONFLICT DO NOTHING`, guard),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "tollgate_projection_events_total",
			Help:        "Events handled by the read-model projections, by event type and outcome (applied, skipped, gap).",
			ConstLabels: labels,
		}, []string{"type", "outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "tollgate_projection_apply_seconds",
			Help:        "Time to apply one event or batch of events to the read models, commit included.",
			ConstLabels: labels,
			Buckets:     prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		position: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "tollgate_projection_last_position",
			Help:        "Highest global position applied to the read models.",
			ConstLabels: labels,
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "tollgate_projection_lag_events",
			Help:        "Events committed after the projections' checkpoint in the global order (up to 1,000,000).",
			ConstLabels: labels,
		}),
	}
	s.readers, s.all = readersOf(ps)
	if reg != nil {
		for _, c := range []prometheus.Collector{s.events, s.seconds, s.position, s.lag} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("projections: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// readersOf returns, for each registered event type, the indexes of the
// projectors of ps that read it, and every index.
func readersOf(ps []Projector) (map[string][]int, []int) {
	readers := map[string][]int{}
	all := make([]int, len(ps))
	for t := range events.Types() {
		readers[t] = []int{}
	}
	for i, p := range ps {
		all[i] = i
		sel, ok := p.(Selective)
		for t := range readers {
			if !ok || sel.Handles(t) {
				readers[t] = append(readers[t], i)
			}
		}
	}
	return readers, all
}

// decode returns e's data for the Set's projectors: nil when none of them
// reads its type, or this build does not know the type (its projectors
// from elsewhere are still given the event).
func (s *Set) decode(e events.Envelope) (events.Data, error) {
	if r, ok := s.readers[e.Type]; ok && len(r) == 0 {
		return nil, nil
	}
	d, err := events.Decode(e)
	if errors.Is(err, events.ErrUnknownType) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	return d, nil
}

// Handle applies one event. A redelivered event (its stream version is
// not above the stored one) commits nothing and returns nil; an event
// whose predecessor has not been applied returns an error wrapping ErrGap.
// Event types no projector knows only advance the guard.
func (s *Set) Handle(ctx context.Context, e events.Envelope) error {
	return s.apply(ctx, []events.Envelope{e}, nil, nil)
}

// HandleBatch applies evs, in order, in one transaction, skipping the ones
// already applied. A gap anywhere fails the whole batch (with ErrGap) and
// applies nothing. It is meant for catching up, where one round trip for
// many events matters: it expects the events to be each stream's next
// ones (the follower's case, see inorder.go), and falls back to reading
// the guard first when they are not.
func (s *Set) HandleBatch(ctx context.Context, evs []events.Envelope) error {
	return s.applyInOrder(ctx, evs, nil)
}

// LastPosition returns the highest global position applied by this Set.
func (s *Set) LastPosition() int64 { return s.lastPos.Load() }

// checkpoint is a follower's position saved in the same transaction as
// the read models it led to.
type checkpoint struct {
	name string
	next pgstore.Cursor
}

// apply applies evs in one transaction, with the checkpoint cp when not
// nil. ds, when not nil, holds each event's data as decode returns it,
// decoded beforehand.
func (s *Set) apply(ctx context.Context, evs []events.Envelope, ds []events.Data, cp *checkpoint) (err error) {
	if len(evs) == 0 {
		return nil
	}
	start := time.Now()
	streams := streamsOf(evs)

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("projections: begin: %w", err)
	}
	defer func() {
		if err != nil {
			// The transaction is what failed or is being abandoned; its
			// rollback error adds nothing.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()

	stored, err := s.loadGuard(ctx, tx, streams)
	if err != nil {
		return err
	}
	current := make(map[string]int64, len(streams))
	for id, v := range stored {
		current[id] = v
	}

	b, pend := s.newBatch()
	b, applied, skipped, maxPos, err := s.queueAll(ctx, tx, b, pend, evs, ds, current)
	if err != nil {
		return err
	}
	if len(applied) == 0 && cp == nil {
		// Every event was a redelivery: commit nothing.
		_ = tx.Rollback(ctx)
		s.count(skipped, "skipped")
		s.seconds.Observe(time.Since(start).Seconds())
		return nil
	}

	for _, p := range pend {
		if p != nil {
			p.Flush(b)
		}
	}
	s.queueGuard(b, streams, stored, current)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("projections: apply %s: %w", describe(applied), err)
	}
	if cp != nil {
		if err := pgstore.SaveCheckpoint(ctx, tx, cp.name, cp.next); err != nil {
			return fmt.Errorf("projections: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("projections: commit %s: %w", describe(applied), err)
	}
	s.count(applied, "applied")
	s.count(skipped, "skipped")
	s.advance(maxPos)
	s.seconds.Observe(time.Since(start).Seconds())
	return nil
}

// streamsOf returns the streams of evs, sorted, each once.
func streamsOf(evs []events.Envelope) []string {
	streams := make([]string, 0, len(evs))
	for _, e := range evs {
		streams = append(streams, e.StreamID)
	}
	slices.Sort(streams)
	return slices.Compact(streams)
}

// newBatch starts one transaction's statements and each accumulator's
// pending writes (nil for the other projectors), by index in s.ps.
func (s *Set) newBatch() (*pgx.Batch, []Pending) {
	b := &pgx.Batch{}
	if s.asyncCommit {
		b.Queue(`SET LOCAL synchronous_commit = off`)
	}
	pend := make([]Pending, len(s.ps))
	for i, p := range s.ps {
		if a, ok := p.(Accumulator); ok {
			pend[i] = a.Pending()
		}
	}
	return b, pend
}

// queueAll applies evs in order to the batch and the pending writes,
// skipping the events of a stream already applied (current holds each
// stream's applied version and is advanced); an event ahead of its stream
// fails the whole batch with a GapError. It returns the batch to go on
// with, what it applied and skipped, and the highest position applied.
func (s *Set) queueAll(ctx context.Context, tx pgx.Tx, b *pgx.Batch, pend []Pending, evs []events.Envelope, ds []events.Data,
	current map[string]int64) (_ *pgx.Batch, applied, skipped []events.Envelope, maxPos int64, err error) {
	for i, e := range evs {
		cur := current[e.StreamID]
		if e.StreamVersion <= cur {
			skipped = append(skipped, e)
			continue
		}
		if e.StreamVersion > cur+1 {
			s.events.WithLabelValues(e.Type, "gap").Inc()
			s.logger.InfoContext(ctx, "event ahead of its stream; refused until the earlier one is applied",
				"event_id", e.EventID, "stream", e.StreamID, "version", e.StreamVersion, "applied", cur)
			return b, nil, nil, 0, fmt.Errorf("projections: event %s: %w", e.EventID,
				&GapError{StreamID: e.StreamID, Applied: cur, Got: e.StreamVersion})
		}
		var d events.Data
		if ds != nil {
			d = ds[i]
		} else if d, err = s.decode(e); err != nil {
			return b, nil, nil, 0, err
		}
		if b, err = s.applyOne(ctx, tx, b, pend, e, d); err != nil {
			return b, nil, nil, 0, err
		}
		current[e.StreamID] = e.StreamVersion
		applied = append(applied, e)
		maxPos = max(maxPos, e.Position)
	}
	return b, applied, skipped, maxPos, nil
}

// applyOne adds e, decoded as d (nil: not read by any accumulator), to
// the pending writes of the accumulators that read it, executes the
// statements of the projectors from elsewhere, and returns the batch to
// go on queueing into.
func (s *Set) applyOne(ctx context.Context, tx pgx.Tx, b *pgx.Batch, pend []Pending, e events.Envelope, d events.Data) (*pgx.Batch, error) {
	readers, ok := s.readers[e.Type]
	if !ok {
		readers = s.all
	}
	for _, i := range readers {
		if p := pend[i]; p != nil {
			if d == nil {
				continue
			}
			if err := p.Add(e, d); err != nil {
				return b, fmt.Errorf("projections: %s: event %s: %w", s.ps[i].Name(), e.EventID, err)
			}
			continue
		}
		// A projector that runs its own statements must see the effects of
		// everything queued before it.
		if b.Len() > 0 {
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return b, fmt.Errorf("projections: apply before event %s: %w", e.EventID, err)
			}
			b = &pgx.Batch{}
		}
		if err := s.ps[i].Apply(ctx, tx, e); err != nil {
			return b, fmt.Errorf("projections: %s: event %s: %w", s.ps[i].Name(), e.EventID, err)
		}
	}
	return b, nil
}

func (s *Set) loadGuard(ctx context.Context, tx pgx.Tx, streams []string) (map[string]int64, error) {
	rows, err := tx.Query(ctx, s.selectGuard, SetName, streams)
	if err != nil {
		return nil, fmt.Errorf("projections: read guard: %w", err)
	}
	defer rows.Close()
	stored := make(map[string]int64, len(streams))
	for rows.Next() {
		var id string
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			return nil, fmt.Errorf("projections: read guard: %w", err)
		}
		stored[id] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projections: read guard: %w", err)
	}
	return stored, nil
}

// queueGuard stores the new version of every stream that moved.
// Rows go in stream order, as they were locked, so that concurrent
// batches take their locks in one order and cannot deadlock.
func (s *Set) queueGuard(b *pgx.Batch, streams []string, stored, current map[string]int64) {
	var updIDs, insIDs []string
	var updVs, insVs []int64
	for _, id := range streams {
		v := current[id]
		old, ok := stored[id]
		switch {
		case !ok && v > 0:
			insIDs, insVs = append(insIDs, id), append(insVs, v)
		case v != old:
			updIDs, updVs = append(updIDs, id), append(updVs, v)
		}
	}
	if len(updIDs) > 0 {
		b.Queue(s.updateGuard, SetName, updIDs, updVs)
	}
	if len(insIDs) > 0 {
		b.Queue(s.insertGuard, SetName, insIDs, insVs)
	}
}

func (s *Set) count(evs []events.Envelope, outcome string) {
	for _, e := range evs {
		s.events.WithLabelValues(e.Type, outcome).Inc()
	}
}

// advance raises the last applied position. Accounts are consumed in
// parallel partitions, so positions arrive out of order: the gauge keeps
// the highest.
func (s *Set) advance(pos int64) {
	for {
		old := s.lastPos.Load()
		if pos <= old {
			return
		}
		if s.lastPos.CompareAndSwap(old, pos) {
			s.position.Set(float64(pos))
			return
		}
	}
}

// WatchLag sets the lag gauge to what lag returns (the events committed
// after the follower's checkpoint) now and every interval until ctx ends.
func (s *Set) WatchLag(ctx context.Context, lag func(context.Context) (int64, error), every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := lag(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.logger.WarnContext(ctx, "projection lag: count events behind", "err", err)
		case err == nil:
			s.lag.Set(float64(n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func describe(evs []events.Envelope) string {
	if len(evs) == 1 {
		e := evs[0]
		return fmt.Sprintf("event %s (%s, %s v%d)", e.EventID, e.Type, e.StreamID, e.StreamVersion)
	}
	return fmt.Sprintf("%d events (first %s)", len(evs), evs[0].EventID)
}
