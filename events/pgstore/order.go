package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate/tollgate/events"
)

// Cursor is a place in the global order: the (transaction id, position) of
// the last event read. The zero Cursor is the beginning. Cursors compare as
// numbers, transaction id first (see Less).
type Cursor struct {
	TransactionID uint64 `json:"transaction_id"`
	Position      int64  `json:"position"`
}

// Less reports whether c comes before d in the global order.
func (c Cursor) Less(d Cursor) bool {
	if c.TransactionID != d.TransactionID {
		return c.TransactionID < d.TransactionID
	}
	return c.Position < d.Position
}

// Filter narrows a read of the global order. Zero fields match everything.
type Filter struct {
	Types     []string
	AccountID string
	Since     time.Time
	Until     time.Time
	// WithoutMetadata reads the events without their Metadata (left
	// empty): less to send and decode for readers that never look at it,
	// such as the read models' projectors.
	WithoutMetadata bool
}

// selectData is selectEnvelope without the metadata (read as JSON null).
const selectData = `SELECT event_id, stream_id, stream_version, type, schema_version, occurred_at, data, 'null'::jsonb, position, transaction_id::text::bigint AS txid FROM events`

// where returns f's conditions on the events table (" AND …", empty when
// f is zero) and args with their parameters appended.
func (f Filter) where(args []any) (string, []any) {
	var q string
	if len(f.Types) > 0 {
		args = append(args, f.Types)
		q += fmt.Sprintf(" AND events.type = ANY($%d)", len(args))
	}
	if f.AccountID != "" {
		args = append(args, f.AccountID)
		q += fmt.Sprintf(" AND events.account_id = $%d", len(args))
	}
	if !f.Since.IsZero() {
		args = append(args, f.Since)
		q += fmt.Sprintf(" AND events.occurred_at >= $%d", len(args))
	}
	if !f.Until.IsZero() {
		args = append(args, f.Until)
		q += fmt.Sprintf(" AND events.occurred_at < $%d", len(args))
	}
	return q, args
}

// AppenderLock is the advisory lock key every transaction appending
// events holds (shared) from before it has a transaction id until it ends
// (migration 0007): readers find the appenders in pg_locks by it.
const AppenderLock int64 = 0x746f6c6c2d617070 // "toll-app"

// Horizon returns the read horizon: every event whose transaction id is
// below it has committed or never will, so a reader that reads below it
// in a later statement cannot skip an event that commits late. It is the
// oldest transaction that may still append events to this database (see
// migration 0007), or the snapshot's xmax when none may: other databases'
// transactions, read-only ones and the read models' writers never hold it
// back.
func (s *Store) Horizon(ctx context.Context) (uint64, error) {
	var h uint64
	if err := s.pool.QueryRow(ctx, `SELECT tollgate_read_horizon($1)::text::bigint`, AppenderLock).Scan(&h); err != nil {
		return 0, fmt.Errorf("read horizon: %w", err)
	}
	return h, nil
}

// NextTransactionID returns the snapshot's xmax (the newest completed
// transaction id plus one): every event committed before this call has a
// smaller transaction id, so a reader that has read everything below it
// has read all of them.
func (s *Store) NextTransactionID(ctx context.Context) (uint64, error) {
	var x uint64
	if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&x); err != nil {
		return 0, fmt.Errorf("next transaction id: %w", err)
	}
	return x, nil
}

// ReadAll returns up to limit events after cur in the global order, and
// the cursor after the last of them. It reads only below the horizon, so
// an event that commits late can never be skipped: readers wait for it
// instead, and only for it.
func (s *Store) ReadAll(ctx context.Context, cur Cursor, limit int, f Filter) ([]events.Envelope, Cursor, error) {
	// One statement: the horizon is of this statement's own snapshot (an
	// InitPlan, evaluated once).
	return s.read(ctx, cur, `(SELECT tollgate_read_horizon($3))`, AppenderLock, limit, f)
}

// ReadBelow is ReadAll below a horizon the caller got from Horizon (or a
// smaller bound) in an earlier statement.
func (s *Store) ReadBelow(ctx context.Context, cur Cursor, horizon uint64, limit int, f Filter) ([]events.Envelope, Cursor, error) {
	if horizon <= cur.TransactionID {
		return nil, cur, nil
	}
	return s.read(ctx, cur, `$3::text::xid8`, strconv.FormatUint(horizon, 10), limit, f)
}

// read reads up to limit events after cur whose transaction id is below
// bound, an SQL expression of the parameter $3 = boundArg.
func (s *Store) read(ctx context.Context, cur Cursor, bound string, boundArg any, limit int, f Filter) ([]events.Envelope, Cursor, error) {
	// Qualified names: an unqualified ORDER BY transaction_id would sort
	// the text output column, where 100000 comes before 99999.
	filter, args := f.where([]any{strconv.FormatUint(cur.TransactionID, 10), cur.Position, boundArg})
	args = append(args, limit)
	q := selectEnvelope
	if f.WithoutMetadata {
		q = selectData
	}
	q += `
		WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2)
		  AND events.transaction_id < ` + bound + filter +
		fmt.Sprintf(" ORDER BY events.transaction_id, events.position LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, cur, fmt.Errorf("read all: %w", err)
	}
	out, last, err := scanEnvelopes(rows)
	if err != nil {
		return nil, cur, fmt.Errorf("read all: %w", err)
	}
	if len(out) > 0 {
		cur = last
	}
	return out, cur, nil
}

// CursorAt returns the cursor of the event at position, so that a reader
// can resume after it.
func (s *Store) CursorAt(ctx context.Context, position int64) (Cursor, error) {
	if position <= 0 {
		return Cursor{}, nil
	}
	var tx uint64
	err := s.pool.QueryRow(ctx, `SELECT transaction_id::text::bigint FROM events WHERE position = $1`, position).Scan(&tx)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, fmt.Errorf("no event at position %d", position)
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("cursor at %d: %w", position, err)
	}
	return Cursor{TransactionID: tx, Position: position}, nil
}

// Head returns the cursor of the newest readable event (below the horizon).
func (s *Store) Head(ctx context.Context) (Cursor, error) {
	h, err := s.Horizon(ctx)
	if err != nil {
		return Cursor{}, fmt.Errorf("head: %w", err)
	}
	var c Cursor
	err = s.pool.QueryRow(ctx, `SELECT events.transaction_id::text::bigint, events.position FROM events
		WHERE events.transaction_id < $1::text::xid8
		ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1`,
		strconv.FormatUint(h, 10)).Scan(&c.TransactionID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("head: %w", err)
	}
	return c, nil
}

// maxBehind caps Behind's count, so a reader far behind costs one bounded
// index scan.
const maxBehind = 1_000_000

// Behind returns how many committed events come after cur in the global
// order (readable or still held back by the horizon), at most 1,000,000:
// a follower's lag.
func (s *Store) Behind(ctx context.Context, cur Cursor) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM events
		WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2) LIMIT $3) behind`,
		strconv.FormatUint(cur.TransactionID, 10), cur.Position, maxBehind).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("events behind: %w", err)
	}
	return n, nil
}

// Appender is a transaction appending events that holds the horizon back.
type Appender struct {
	TransactionID   uint64
	PID             int32
	ApplicationName string
	Started         time.Time
	State           string
}

func (a Appender) String() string {
	return fmt.Sprintf("transaction %d (pid %d, application %q, %s, running since %s)",
		a.TransactionID, a.PID, a.ApplicationName, a.State, a.Started.UTC().Format(time.RFC3339))
}

// Appenders lists the transactions appending events now, oldest first:
// what a reader waiting for the horizon waits for.
func (s *Store) Appenders(ctx context.Context) ([]Appender, error) {
	rows, err := s.pool.Query(ctx, `
		WITH snap AS (SELECT pg_current_snapshot() AS s)
		SELECT coalesce((SELECT x::text::bigint FROM pg_snapshot_xip(snap.s) AS x
		                  WHERE ((x::text::bigint % 4294967296)::text)::xid = t.transactionid),
		                -- not in xip: at or above xmax, less than 2^31 above it
		                pg_snapshot_xmax(snap.s)::text::bigint + (t.transactionid::text::bigint
		                  - pg_snapshot_xmax(snap.s)::text::bigint % 4294967296 + 4294967296) % 4294967296),
		       a.pid, coalesce(act.application_name, ''), coalesce(act.xact_start, now()), coalesce(act.state, '')
		FROM snap, pg_locks a
		JOIN pg_locks t ON t.virtualtransaction = a.virtualtransaction
		     AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
		LEFT JOIN pg_stat_activity act ON act.pid = a.pid
		WHERE a.locktype = 'advisory' AND a.granted
		  AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND a.classid = ($1::bigint >> 32)::oid AND a.objid = ($1::bigint & 4294967295)::oid AND a.objsubid = 1
		ORDER BY 1`, AppenderLock)
	if err != nil {
		return nil, fmt.Errorf("appenders: %w", err)
	}
	defer rows.Close()
	var out []Appender
	for rows.Next() {
		var a Appender
		if err := rows.Scan(&a.TransactionID, &a.PID, &a.ApplicationName, &a.Started, &a.State); err != nil {
			return nil, fmt.Errorf("appenders: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// LoadCheckpoint returns the named follower's cursor; the zero cursor when
// it has none yet.
func LoadCheckpoint(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, name string) (Cursor, error) {
	var c Cursor
	err := q.QueryRow(ctx, `SELECT transaction_id::text::bigint, position FROM checkpoints WHERE name = $1`, name).
		Scan(&c.TransactionID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	return c, nil
}

// SaveCheckpoint records the named follower's cursor.
func SaveCheckpoint(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, name string, c Cursor) error {
	_, err := q.Exec(ctx, `INSERT INTO checkpoints (name, transaction_id, position, updated_at)
		VALUES ($1, $2::text::xid8, $3, now())
		ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id,
			position = EXCLUDED.position, updated_at = now()`,
		name, strconv.FormatUint(c.TransactionID, 10), c.Position)
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", name, err)
	}
	return nil
}
