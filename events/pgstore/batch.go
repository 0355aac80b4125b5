package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate/tollgate/events"
)

// querier runs a statement on the pool or in a transaction.
type querier interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}

// number returns evs as stored at streamID from version+1 (positions not
// yet known), and their metadata as JSON.
func number(streamID string, version int64, evs []events.Envelope) ([]events.Envelope, []string, error) {
	out := make([]events.Envelope, len(evs))
	md := make([]string, len(evs))
	for i, e := range evs {
		b, err := json.Marshal(e.Metadata)
		if err != nil {
			return nil, nil, fmt.Errorf("marshal metadata: %w", err)
		}
		e.StreamID = streamID
		e.StreamVersion = version + int64(i) + 1
		out[i], md[i] = e, string(b)
	}
	return out, md, nil
}

// batch is the events of one or more appends as the columns of one insert,
// with each append's version check.
type batch struct {
	appends        int
	ids            []uuid.UUID
	streams        []string
	versions       []int64
	types          []string
	schemaVersions []int32
	occurred       []time.Time
	accounts       []string
	data           []string
	metadata       []string
	// checks: the stream and version of each append at a version above 0,
	// whose stream must have an event at that version.
	checkStreams  []string
	checkVersions []int64
	// got: the position returned for each row.
	got []int64
}

// newBatch returns a batch with room for n events.
func newBatch(n int) *batch {
	return &batch{
		ids: make([]uuid.UUID, 0, n), streams: make([]string, 0, n), versions: make([]int64, 0, n),
		types: make([]string, 0, n), schemaVersions: make([]int32, 0, n), occurred: make([]time.Time, 0, n),
		accounts: make([]string, 0, n), data: make([]string, 0, n), metadata: make([]string, 0, n),
	}
}

// add adds an append's numbered events and their metadata at version.
func (b *batch) add(evs []events.Envelope, md []string, version int64) {
	b.appends++
	for i, e := range evs {
		b.ids = append(b.ids, e.EventID)
		b.streams = append(b.streams, e.StreamID)
		b.versions = append(b.versions, e.StreamVersion)
		b.types = append(b.types, e.Type)
		b.schemaVersions = append(b.schemaVersions, int32(e.SchemaVersion))
		b.occurred = append(b.occurred, e.OccurredAt)
		b.accounts = append(b.accounts, e.Metadata.AccountID)
		b.data = append(b.data, string(e.Data))
		b.metadata = append(b.metadata, md[i])
	}
	if version > 0 && len(evs) > 0 {
		b.checkStreams = append(b.checkStreams, evs[0].StreamID)
		b.checkVersions = append(b.checkVersions, version)
	}
}

// insertOneSQL inserts one append's events, or none when the stream has
// no event at the version the append expects (it is behind, and inserting
// would leave a gap). The statement trigger registers it as an appender
// before its first row gives its transaction an id (migration 0007).
const insertOneSQL = `
	INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
	SELECT id, $2, v, t, sv, o, a, d::json, m::jsonb
	FROM unnest($1::uuid[], $3::bigint[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::text[], $9::text[])
	     AS u(id, v, t, sv, o, a, d, m)
	WHERE $10::bigint = 0 OR EXISTS (SELECT 1 FROM events WHERE stream_id = $2 AND stream_version = $10)
	RETURNING position`

// insertSQL is insertOneSQL for the appends of a group, each row with its
// stream: it inserts every row or none, none when the check of any append
// fails.
const insertSQL = `
	WITH bad AS (
		SELECT 1 FROM unnest($10::text[], $11::bigint[]) AS c(s, v)
		WHERE NOT EXISTS (SELECT 1 FROM events WHERE stream_id = c.s AND stream_version = c.v)
		LIMIT 1)
	INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
	SELECT id, s, v, t, sv, o, a, d::json, m::jsonb
	FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::text[], $9::text[])
	     AS u(id, s, v, t, sv, o, a, d, m)
	WHERE NOT EXISTS (SELECT 1 FROM bad)
	RETURNING event_id, position`

// insert runs the batch's statement on q and records each row's position.
// It fails with errVersionAhead when a version check failed (nothing was
// inserted).
func (b *batch) insert(ctx context.Context, q querier) error {
	var rows pgx.Rows
	var err error
	if b.appends == 1 {
		version := int64(0)
		if len(b.checkVersions) == 1 {
			version = b.checkVersions[0]
		}
		rows, err = q.Query(ctx, insertOneSQL, b.uuids(), b.streams[0], pgtype.FlatArray[int64](b.versions), texts(b.types),
			pgtype.FlatArray[int32](b.schemaVersions), pgtype.FlatArray[time.Time](b.occurred), texts(b.accounts), texts(b.data),
			texts(b.metadata), version)
	} else {
		rows, err = q.Query(ctx, insertSQL, b.uuids(), texts(b.streams), pgtype.FlatArray[int64](b.versions), texts(b.types),
			pgtype.FlatArray[int32](b.schemaVersions), pgtype.FlatArray[time.Time](b.occurred), texts(b.accounts), texts(b.data),
			texts(b.metadata), texts(b.checkStreams), pgtype.FlatArray[int64](b.checkVersions))
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	b.got = make([]int64, len(b.ids))
	n, err := b.scan(rows)
	switch {
	case err != nil:
		return err
	case n == 0:
		return errVersionAhead
	case n != len(b.ids):
		return &outcomeUnknownError{cause: fmt.Errorf("insert returned %d of %d events", n, len(b.ids))}
	}
	return nil
}

// Arrays as pgtype.FlatArray, which pgx encodes without reflection
// (a []string or []uuid.UUID goes through a reflective plan per element,
// the largest part of an append's CPU in Go).
func texts(s []string) pgtype.FlatArray[string] { return pgtype.FlatArray[string](s) }

func (b *batch) uuids() pgtype.FlatArray[pgtype.UUID] {
	out := make(pgtype.FlatArray[pgtype.UUID], len(b.ids))
	for i, id := range b.ids {
		out[i] = pgtype.UUID{Bytes: id, Valid: true}
	}
	return out
}

// scan records the positions rows returns and how many: in the order
// given for one append, by event id for a group (rows come back in the
// order given; looked up by id otherwise).
func (b *batch) scan(rows pgx.Rows) (int, error) {
	var index map[uuid.UUID]int
	n := 0
	for ; rows.Next(); n++ {
		if b.appends == 1 {
			if n >= len(b.got) {
				return n, errors.New("insert returned more rows than it was given")
			}
			if err := rows.Scan(&b.got[n]); err != nil {
				return n, err
			}
			continue
		}
		var id uuid.UUID
		var pos int64
		if err := rows.Scan(&id, &pos); err != nil {
			return n, err
		}
		j := n
		if j >= len(b.ids) || b.ids[j] != id {
			if index == nil {
				index = make(map[uuid.UUID]int, len(b.ids))
				for i, id := range b.ids {
					index[id] = i
				}
			}
			j = index[id]
		}
		b.got[j] = pos
	}
	return n, rows.Err()
}

// positions sets the positions of evs, the batch's rows from row first on.
func (b *batch) positions(evs []events.Envelope, first int) {
	for i := range evs {
		evs[i].Position = b.got[first+i]
	}
}

// errVersionAhead: the expected version is beyond the stream's end.
var errVersionAhead = errors.New("expected version is ahead of the stream")
