package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate/tollgate/events"
)

// ReadMatching is ReadAll for a follower that needs only the events f
// matches but must still move past all the others: it returns up to limit
// matching events after cur in the global order, and the cursor to resume
// after. With limit of them, that is the last one. With fewer, every
// matching event below the horizon has been returned, and the cursor is
// the last event of any kind below it: the end of what this read covered,
// so that the follower moves past events it never reads, a read that
// matches nothing still moves it, and an idle log leaves it where it is
// (the horizon alone moving, with no event below it, does not move it).
//
// One statement: the matches and the last event are read below the same
// horizon, of the statement's own snapshot (computed once).
func (s *Store) ReadMatching(ctx context.Context, cur Cursor, limit int, f Filter) ([]events.Envelope, Cursor, error) {
	if limit <= 0 {
		return nil, cur, nil // LIMIT 0 would match nothing and skip everything
	}
	filter, args := f.where([]any{strconv.FormatUint(cur.TransactionID, 10), cur.Position, AppenderLock})
	args = append(args, limit)
	const after = `(events.transaction_id, events.position) > ($1::text::xid8, $2)
		AND events.transaction_id < (SELECT h FROM horizon)`
	q := `WITH horizon AS MATERIALIZED (SELECT tollgate_read_horizon($3) AS h),
		last AS (SELECT events.transaction_id::text::bigint AS txid, events.position FROM events WHERE ` + after + `
			ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1),
		matching AS (` + selectEnvelope + ` WHERE ` + after + filter +
		fmt.Sprintf(" ORDER BY events.transaction_id, events.position LIMIT $%d)", len(args)) + `
		SELECT last.txid, last.position, m.event_id, m.stream_id, m.stream_version, m.type, m.schema_version,
			m.occurred_at, m.data, m.metadata, m.position, m.txid
		FROM last LEFT JOIN matching m ON true ORDER BY m.txid, m.position`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, cur, fmt.Errorf("read matching: %w", err)
	}
	defer rows.Close()
	var out []events.Envelope
	next := cur
	for rows.Next() {
		var (
			e         events.Envelope
			id        pgtype.UUID
			stream    pgtype.Text
			version   pgtype.Int8
			typ       pgtype.Text
			schema    pgtype.Int4
			occurred  pgtype.Timestamptz
			data, md  []byte
			pos, txid pgtype.Int8
			lastTx    uint64
			lastPos   int64
		)
		if err := rows.Scan(&lastTx, &lastPos, &id, &stream, &version, &typ, &schema, &occurred, &data, &md, &pos, &txid); err != nil {
			return nil, cur, fmt.Errorf("read matching: %w", err)
		}
		next = Cursor{TransactionID: lastTx, Position: lastPos}
		if !id.Valid { // the last event, and no match
			break
		}
		e.EventID, e.StreamID, e.StreamVersion, e.Type = uuid.UUID(id.Bytes), stream.String, version.Int64, typ.String
		e.SchemaVersion, e.OccurredAt, e.Data, e.Position = int(schema.Int32), occurred.Time.UTC(), data, pos.Int64
		if err := json.Unmarshal(md, &e.Metadata); err != nil {
			return nil, cur, fmt.Errorf("read matching: event %s metadata: %w", e.EventID, err)
		}
		out = append(out, e)
		if len(out) == limit {
			next = Cursor{TransactionID: uint64(txid.Int64), Position: e.Position}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, cur, fmt.Errorf("read matching: %w", err)
	}
	return out, next, nil
}
