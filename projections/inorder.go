package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// A follower of the global order (the live projector, a rebuild) reads
// each event once, in order, each stream's without gaps: the guard then
// holds, for every stream of a batch, the version before the batch's
// first event of it. Such a batch is built without reading the guard
// (prepare: decoded and folded before its transaction, a rebuild's while
// the batch before it is written) and stores the new versions only where
// the guard holds what was expected; where it does not (a redelivery, a
// gap), the batch rolls back and is applied as any other (apply).

// errGuardMoved says that the guard did not hold the versions a prepared
// batch expected.
var errGuardMoved = errors.New("projections: guard not at the versions expected")

// preparedBatch is a batch of events in order, its statements built.
type preparedBatch struct {
	evs []events.Envelope
	// ds are the events' data (nil where no projector reads it), for the
	// fallback to apply.
	ds []events.Data
	// lanes are the statements: the guard's, then each accumulator's.
	lanes []*pgx.Batch
	// inOrder is false when the events are not each stream's next ones in
	// order: b is nil and apply decides.
	inOrder bool
	maxPos  int64
}

// prepare decodes evs and builds their statements, guard first, assuming
// the guard holds, for each stream, the version before its first event in
// evs. It reads nothing from the database.
func (s *Set) prepare(evs []events.Envelope) (*preparedBatch, error) {
	p := &preparedBatch{evs: evs, ds: make([]events.Data, len(evs))}
	for i, e := range evs {
		d, err := s.decode(e)
		if err != nil {
			return nil, err
		}
		p.ds[i] = d
	}
	first, last, ok := versionRuns(evs)
	if !ok || !s.accumulatorsOnly() {
		return p, nil
	}
	_, pend := s.newBatch()
	for i, e := range evs {
		// Accumulators only: nothing runs, nothing is queued in the batch.
		if _, err := s.applyOne(context.Background(), nil, nil, pend, e, p.ds[i]); err != nil {
			return nil, err
		}
		p.maxPos = max(p.maxPos, e.Position)
	}
	p.lanes = make([]*pgx.Batch, 1+len(pend))
	p.lanes[0] = &pgx.Batch{}
	s.queueExpectedGuard(p.lanes[0], streamsOf(evs), first, last)
	for i, q := range pend {
		p.lanes[i+1] = &pgx.Batch{}
		q.Flush(p.lanes[i+1])
	}
	p.inOrder = true
	return p, nil
}

// statements returns lanes' statements in one batch, after the
// transaction's settings.
func (s *Set) statements(lanes ...*pgx.Batch) *pgx.Batch {
	b := &pgx.Batch{}
	if s.asyncCommit {
		b.Queue(`SET LOCAL synchronous_commit = off`)
	}
	for _, l := range lanes {
		b.QueuedQueries = append(b.QueuedQueries, l.QueuedQueries...)
	}
	return b
}

// accumulatorsOnly reports whether every projector of s is an
// Accumulator: the others run their statements in the transaction, so a
// batch for them cannot be built before it.
func (s *Set) accumulatorsOnly() bool {
	for _, p := range s.ps {
		if _, ok := p.(Accumulator); !ok {
			return false
		}
	}
	return true
}

// versionRuns returns each stream's first and last version in evs, and
// whether each stream's events come in order without a gap.
func versionRuns(evs []events.Envelope) (first, last map[string]int64, ok bool) {
	first, last = map[string]int64{}, map[string]int64{}
	for _, e := range evs {
		if v, seen := last[e.StreamID]; seen && e.StreamVersion != v+1 {
			return nil, nil, false
		}
		if _, seen := first[e.StreamID]; !seen {
			first[e.StreamID] = e.StreamVersion
		}
		last[e.StreamID] = e.StreamVersion
	}
	return first, last, true
}

// queueExpectedGuard queues the guard's new versions, checked: a stream
// whose batch starts at version 1 must have no row yet, any other must
// hold the version before its first event; otherwise the statement's
// check fails with errGuardMoved. Rows go in stream order, so that
// batches lock them alike (as loadGuard does).
func (s *Set) queueExpectedGuard(b *pgx.Batch, streams []string, first, last map[string]int64) {
	var insIDs, updIDs []string
	var insVs, updVs, updPrev []int64
	for _, id := range streams {
		if first[id] == 1 {
			insIDs, insVs = append(insIDs, id), append(insVs, last[id])
			continue
		}
		updIDs, updVs, updPrev = append(updIDs, id), append(updVs, last[id]), append(updPrev, first[id]-1)
	}
	expect := func(n int) func(pgconn.CommandTag) error {
		return func(ct pgconn.CommandTag) error {
			if ct.RowsAffected() != int64(n) {
				return errGuardMoved
			}
			return nil
		}
	}
	if len(updIDs) > 0 {
		b.Queue(s.updateExpectedGuard, SetName, updIDs, updVs, updPrev).Exec(expect(len(updIDs)))
	}
	if len(insIDs) > 0 {
		b.Queue(s.insertNewGuard, SetName, insIDs, insVs).Exec(expect(len(insIDs)))
	}
}

// applyInOrder applies evs, read in the global order, with the
// checkpoint cp when not nil.
func (s *Set) applyInOrder(ctx context.Context, evs []events.Envelope, cp *checkpoint) error {
	p, err := s.prepare(evs)
	if err != nil {
		return err
	}
	return s.commitPrepared(ctx, p, cp)
}

// commitPrepared writes p in one transaction with the checkpoint cp when
// not nil; where the guard was not as p expected, it applies p's events
// as apply does instead.
func (s *Set) commitPrepared(ctx context.Context, p *preparedBatch, cp *checkpoint) error {
	if len(p.evs) == 0 {
		return nil
	}
	if !p.inOrder {
		return s.apply(ctx, p.evs, p.ds, cp)
	}
	start := time.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.SendBatch(ctx, s.statements(p.lanes...)).Close(); err != nil {
			return err
		}
		if cp != nil {
			return pgstore.SaveCheckpoint(ctx, tx, cp.name, cp.next)
		}
		return nil
	})
	if errors.Is(err, errGuardMoved) {
		return s.apply(ctx, p.evs, p.ds, cp)
	}
	if err != nil {
		return fmt.Errorf("projections: apply %s: %w", describe(p.evs), err)
	}
	s.count(p.evs, "applied")
	s.advance(p.maxPos)
	s.seconds.Observe(time.Since(start).Seconds())
	return nil
}
