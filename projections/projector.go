// Package projections keeps Tollgate's read models — the usage ledger and
// its daily rollups, job status and billing records — up to date from the
// event log, and rebuilds them from position 0 beside the live ones.
//
// Every projector writes schema-qualified tables, so the same code builds
// the live model (schema "public") and a rebuild in another schema; and
// every time it writes comes from the event, never from the clock, so a
// rebuild is row for row the live model.
package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
)

// LiveSchema is the schema of the read models the API and the billing
// reporter read.
const LiveSchema = "public"

// Projector updates one read model from events, inside the caller's
// transaction.
type Projector interface {
	// Name identifies the projector in logs and errors.
	Name() string
	// Apply updates the read model for e. Events of types the projector
	// does not care about are ignored.
	Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error
}

// Accumulator is implemented by projectors whose writes for many events
// fold into a few set-based statements (their effects commute, they fold
// one stream's events in order in Go, or they keep in order the few
// statements whose order matters). A Set gives each transaction
// its own Pending state and flushes it, after every event of the
// transaction was added, into the same batch. A domain's read model
// (usage, jobs, quota state, billing records) implements it beside its
// domain and is wired into a Set by the server.
type Accumulator interface {
	Projector
	Pending() Pending
}

// Pending collects one transaction's writes of an Accumulator.
type Pending interface {
	// Add folds one event (already decoded as d) into the writes.
	Add(e events.Envelope, d events.Data) error
	// Flush queues the folded writes into b, once, after the last Add.
	Flush(b *pgx.Batch)
}

// Rebuilding is implemented by an Accumulator part of whose model is
// cheaper to derive once, at the end of a rebuild, from what the rest of
// it holds (a sum over the rows it inserted, say) than to keep up to date
// batch by batch. A rebuild applies its events with the accumulator
// ForRebuild returns, then runs the statements it returns, in order,
// after the last batch. Rebuilt models must equal live ones all the same
// (TestLiveEqualsRebuild).
type Rebuilding interface {
	ForRebuild() (Accumulator, []string)
}

// Selective is implemented by projectors that read only some event types:
// a Set gives such a projector only the events of those types, and
// decodes an event that none of its projectors reads not at all. A
// projector that is not Selective is given every event.
type Selective interface {
	// Handles reports whether the projector reads events of type t.
	Handles(eventType string) bool
}

// ApplyPending runs an Accumulator's statements for one event in tx: what
// its Apply does when it is used outside a Set.
func ApplyPending(ctx context.Context, tx pgx.Tx, a Accumulator, name string, e events.Envelope) error {
	d, err := events.Decode(e)
	if errors.Is(err, events.ErrUnknownType) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p := a.Pending()
	if err := p.Add(e, d); err != nil {
		return fmt.Errorf("%s: event %s: %w", name, e.EventID, err)
	}
	b := &pgx.Batch{}
	p.Flush(b)
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("%s: event %s: %w", name, e.EventID, err)
	}
	return nil
}

// Querier is what the query helpers need: a pool, a connection or a
// transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Table returns the quoted, schema-qualified name of a read-model table.
func Table(schema, name string) string {
	return pgx.Identifier{schema, name}.Sanitize()
}

// readModelTables lists every read-model table, in the order a rebuild
// creates them and Compare reports them.
func readModelTables() []string {
	return []string{"projection_streams", "usage_ledger", "usage_rollups", "jobs", "billing_records", "billing_record_items", "billing_customers", "billing_customer_links", "billing_dunning", "billing_record_facts", "quota_state", "quota_reservations", "quota_windows", "quota_limits"}
}

// ErrGap is the sentinel matched by errors.Is for a *GapError.
var ErrGap = errors.New("projection: stream gap")

// GapError reports that an event came before an earlier event of its
// stream was applied. The event must be delivered again later, after the
// missing one.
type GapError struct {
	StreamID string
	// Applied is the last version of the stream applied.
	Applied int64
	// Got is the version of the event that arrived.
	Got int64
}

func (e *GapError) Error() string {
	return fmt.Sprintf("projection: stream %s: got version %d, last applied %d", e.StreamID, e.Got, e.Applied)
}

// Is makes errors.Is(err, ErrGap) true.
func (e *GapError) Is(target error) bool { return target == ErrGap }

// UTC returns a nullable timestamp read from a read model in UTC (nil
// stays nil), so rows compare and render the same whatever the session's
// time zone.
func UTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
