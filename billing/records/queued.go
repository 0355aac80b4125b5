package records

import (
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// Projectors returns every billing read model's projector on schema:
// billing records (window, unit: see NewRecords), customer links, dunning
// state and record facts.
func Projectors(schema string, window time.Duration, unit string) []projections.Projector {
	return []projections.Projector{NewRecords(schema, window, unit), NewCustomerLinks(schema), NewDunning(schema), NewFacts(schema)}
}

// statements is a projector whose events each queue a few statements that
// commute with other streams' and run in event order within a stream: its
// Pending queues them all into the Set's batch.
type statements struct {
	name string
	// types are the event types queue reads.
	types []string
	queue func(b *pgx.Batch, e events.Envelope, d events.Data)
}

// Name implements projections.Projector.
func (p *statements) Name() string { return p.name }

// Handles implements projections.Selective.
func (p *statements) Handles(t string) bool { return slices.Contains(p.types, t) }

// Apply implements projections.Projector.
func (p *statements) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return projections.ApplyPending(ctx, tx, p, p.name, e)
}

// Pending implements projections.Accumulator.
func (p *statements) Pending() projections.Pending { return &queuedOps{p: p} }

// queuedOps is one transaction's events of a statements projector.
type queuedOps struct {
	p   *statements
	evs []events.Envelope
	ds  []events.Data
}

func (q *queuedOps) Add(e events.Envelope, d events.Data) error {
	q.evs, q.ds = append(q.evs, e), append(q.ds, d)
	return nil
}

func (q *queuedOps) Flush(b *pgx.Batch) {
	for i, e := range q.evs {
		q.p.queue(b, e, q.ds[i])
	}
}
