// Package pgstore is the PostgreSQL event store: an append-only table with
// optimistic concurrency per stream, idempotent appends by event id, and a
// global order that readers can follow without skipping a transaction that
// commits late.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
)

// AnyVersion appends without checking the stream's version.
const AnyVersion int64 = -1

// Store is the PostgreSQL event store.
type Store struct {
	pool    *pgxpool.Pool
	inline  []InlineProjection
	appends *prometheus.CounterVec
	latency prometheus.Histogram
}

// InlineProjection is a read model kept in the append's own transaction,
// so it is never behind the events it is built from (the API key index: a
// key authenticates the moment its issue is stored). An append whose events
// no inline projection handles stays one statement, without a transaction.
type InlineProjection interface {
	// Handles reports whether the projection reads events of this type.
	Handles(eventType string) bool
	// Apply updates the read model in tx with the stored events (their
	// stream versions and positions set); an error aborts the append.
	Apply(ctx context.Context, tx pgx.Tx, evs []events.Envelope) error
}

// New returns a store on pool, applying the inline projections to every
// append of the events they handle. Metrics are registered on reg when it
// is not nil.
func New(pool *pgxpool.Pool, reg prometheus.Registerer, inline ...InlineProjection) (*Store, error) {
	s := &Store{
		pool:   pool,
		inline: inline,
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_eventstore_appends_total",
			Help: "Appends to the event store by outcome (ok, idempotent, conflict, error).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_eventstore_append_seconds",
			Help:    "Time to append to the event store, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.appends, s.latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("pgstore: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Append stores evs at the end of streamID, numbering them from
// expectedVersion+1, in one transaction. It fails with a
// *events.ConflictError when the stream is not at expectedVersion. When
// every event id is already stored (a retry), it appends nothing and
// returns the stored events. The returned envelopes carry their versions
// and positions.
func (s *Store) Append(ctx context.Context, streamID string, expectedVersion int64, evs ...events.Envelope) ([]events.Envelope, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	start := time.Now()
	defer func() { s.latency.Observe(time.Since(start).Seconds()) }()
	for attempt := 0; ; attempt++ {
		version := expectedVersion
		if version == AnyVersion {
			if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, streamID).Scan(&version); err != nil {
				s.appends.WithLabelValues("error").Inc()
				return nil, fmt.Errorf("append %s: current version: %w", streamID, err)
			}
		}
		out, err := s.insert(ctx, streamID, version, evs)
		if err == nil {
			s.appends.WithLabelValues("ok").Inc()
			return out, nil
		}
		var pgErr *pgconn.PgError
		if !errors.Is(err, errVersionAhead) && (!errors.As(err, &pgErr) || pgErr.Code != "23505") {
			s.appends.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("append %s: %w", streamID, err)
		}
		// A unique violation: either these events are stored already (a
		// retry) or somebody else took the versions.
		stored, err := s.storedByID(ctx, evs)
		if err != nil {
			s.appends.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("append %s: %w", streamID, err)
		}
		if len(stored) == len(evs) {
			s.appends.WithLabelValues("idempotent").Inc()
			return stored, nil
		}
		if expectedVersion == AnyVersion && attempt < 5 {
			continue
		}
		actual, err := s.Version(ctx, streamID)
		if err != nil {
			return nil, fmt.Errorf("append %s: %w", streamID, err)
		}
		s.appends.WithLabelValues("conflict").Inc()
		return nil, &events.ConflictError{StreamID: streamID, Expected: expectedVersion, Actual: actual}
	}
}

func (s *Store) insert(ctx context.Context, streamID string, version int64, evs []events.Envelope) ([]events.Envelope, error) {
	n := len(evs)
	ids := make([]uuid.UUID, n)
	versions := make([]int64, n)
	types := make([]string, n)
	schemaVersions := make([]int32, n)
	occurred := make([]time.Time, n)
	accounts := make([]string, n)
	data := make([]string, n)
	metadata := make([]string, n)
	out := make([]events.Envelope, n)
	for i, e := range evs {
		md, err := json.Marshal(e.Metadata)
		if err != nil {
			return nil, fmt.Errorf("marshal metadata: %w", err)
		}
		e.StreamID = streamID
		e.StreamVersion = version + int64(i) + 1
		ids[i], versions[i], types[i] = e.EventID, e.StreamVersion, e.Type
		schemaVersions[i], occurred[i], accounts[i] = int32(e.SchemaVersion), e.OccurredAt, e.Metadata.AccountID
		data[i], metadata[i] = string(e.Data), string(md)
		out[i] = e
	}
	var q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	} = s.pool
	projections := s.inlineFor(evs)
	var tx pgx.Tx
	if len(projections) > 0 {
		var err error
		if tx, err = s.pool.Begin(ctx); err != nil {
			return nil, err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		q = tx
	}
	rows, err := q.Query(ctx, `
		INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
		SELECT id, $2, v, t, sv, o, a, d::json, m::jsonb
		FROM unnest($1::uuid[], $3::bigint[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::text[], $9::text[])
		     AS u(id, v, t, sv, o, a, d, m)
		WHERE $10::bigint = 0 OR EXISTS (SELECT 1 FROM events WHERE stream_id = $2 AND stream_version = $10)
		RETURNING position`,
		ids, streamID, versions, types, schemaVersions, occurred, accounts, data, metadata, version)
	if err != nil {
		return nil, err
	}
	i := 0
	for rows.Next() {
		if err := rows.Scan(&out[i].Position); err != nil {
			rows.Close()
			return nil, err
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if i == 0 {
		// The stream has no event at version: it is behind what the
		// caller expected, and inserting would leave a gap.
		return nil, errVersionAhead
	}
	if tx == nil {
		return out, nil
	}
	for _, p := range projections {
		if err := p.Apply(ctx, tx, out); err != nil {
			return nil, fmt.Errorf("inline projection: %w", err)
		}
	}
	return out, tx.Commit(ctx)
}

// inlineFor returns the inline projections that handle one of evs' types.
func (s *Store) inlineFor(evs []events.Envelope) []InlineProjection {
	var out []InlineProjection
	for _, p := range s.inline {
		for _, e := range evs {
			if p.Handles(e.Type) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// errVersionAhead: the expected version is beyond the stream's end.
var errVersionAhead = errors.New("expected version is ahead of the stream")

const selectEnvelope = `SELECT event_id, stream_id, stream_version, type, schema_version, occurred_at, data, metadata, position, transaction_id::text::bigint AS txid FROM events`

func (s *Store) storedByID(ctx context.Context, evs []events.Envelope) ([]events.Envelope, error) {
	ids := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	rows, err := s.pool.Query(ctx, selectEnvelope+` WHERE event_id = ANY($1) ORDER BY stream_id, stream_version`, ids)
	if err != nil {
		return nil, fmt.Errorf("look up event ids: %w", err)
	}
	out, _, err := scanEnvelopes(rows)
	return out, err
}

// Version returns the stream's current version, 0 for a stream with no events.
func (s *Store) Version(ctx context.Context, streamID string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, streamID).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("version of %s: %w", streamID, err)
	}
	return v, nil
}

// Load returns the stream's events in version order; none for an unknown stream.
func (s *Store) Load(ctx context.Context, streamID string) ([]events.Envelope, error) {
	rows, err := s.pool.Query(ctx, selectEnvelope+` WHERE stream_id = $1 ORDER BY stream_version`, streamID)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", streamID, err)
	}
	out, _, err := scanEnvelopes(rows)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", streamID, err)
	}
	return out, nil
}

func scanEnvelopes(rows pgx.Rows) ([]events.Envelope, Cursor, error) {
	defer rows.Close()
	var out []events.Envelope
	var last Cursor
	for rows.Next() {
		var e events.Envelope
		var data, md []byte
		var tx uint64
		if err := rows.Scan(&e.EventID, &e.StreamID, &e.StreamVersion, &e.Type, &e.SchemaVersion, &e.OccurredAt, &data, &md, &e.Position, &tx); err != nil {
			return nil, last, err
		}
		e.OccurredAt = e.OccurredAt.UTC()
		e.Data = data
		if err := json.Unmarshal(md, &e.Metadata); err != nil {
			return nil, last, fmt.Errorf("event %s metadata: %w", e.EventID, err)
		}
		last = Cursor{TransactionID: tx, Position: e.Position}
		out = append(out, e)
	}
	return out, last, rows.Err()
}
