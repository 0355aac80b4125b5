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
	group   *committer // nil when group commit is disabled
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

// Config configures a Store. Zero fields take their defaults.
type Config struct {
	// Registerer, when not nil, registers the store's metrics.
	Registerer prometheus.Registerer
	// Inline are applied to every append of the events they handle.
	Inline []InlineProjection
	// GroupCommit lets concurrent appends share a statement and a commit.
	GroupCommit GroupCommitConfig
}

// New returns a store on pool, applying the inline projections to every
// append of the events they handle, with group commit on its defaults.
// Metrics are registered on reg when it is not nil.
func New(pool *pgxpool.Pool, reg prometheus.Registerer, inline ...InlineProjection) (*Store, error) {
	return NewWithConfig(pool, Config{Registerer: reg, Inline: inline})
}

// NewWithConfig returns a store on pool configured by cfg.
func NewWithConfig(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	cfg.GroupCommit.setDefaults()
	if err := cfg.GroupCommit.Validate(); err != nil {
		return nil, err
	}
	s := &Store{
		pool:   pool,
		inline: cfg.Inline,
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
	collectors := []prometheus.Collector{s.appends, s.latency}
	if !cfg.GroupCommit.Disabled {
		s.group = newCommitter(pool, cfg.GroupCommit)
		collectors = append(collectors, s.group.sizes, s.group.fallbacks)
	}
	if cfg.Registerer != nil {
		for _, c := range collectors {
			if err := cfg.Registerer.Register(c); err != nil {
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
//
// Concurrent appends at an expected version whose events no inline
// projection handles share one statement, and so one transaction and one
// commit (see GroupCommitConfig); each returns once its events are
// durable, with the answer it would have had alone. An error for which
// Ambiguous reports true (its context ended once its group was sent, or
// the connection was lost) means the events may have been stored.
func (s *Store) Append(ctx context.Context, streamID string, expectedVersion int64, evs ...events.Envelope) ([]events.Envelope, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	start := time.Now()
	defer func() { s.latency.Observe(time.Since(start).Seconds()) }()
	if s.group != nil && expectedVersion != AnyVersion && len(s.inlineFor(evs)) == 0 {
		if done, ok := s.group.alone(); ok {
			out, outcome, err := s.appendAlone(ctx, streamID, expectedVersion, evs)
			done()
			s.appends.WithLabelValues(outcome).Inc()
			return out, err
		}
		res := s.group.append(ctx, streamID, expectedVersion, evs)
		if !res.fallback {
			if res.err != nil {
				s.appends.WithLabelValues("error").Inc()
				return nil, fmt.Errorf("append %s: %w", streamID, res.err)
			}
			s.appends.WithLabelValues("ok").Inc()
			return res.out, nil
		}
	}
	out, outcome, err := s.appendAlone(ctx, streamID, expectedVersion, evs)
	s.appends.WithLabelValues(outcome).Inc()
	return out, err
}

// appendAlone is Append in a statement of its own; it returns the outcome
// to count.
func (s *Store) appendAlone(ctx context.Context, streamID string, expectedVersion int64, evs []events.Envelope) ([]events.Envelope, string, error) {
	for attempt := 0; ; attempt++ {
		version := expectedVersion
		if version == AnyVersion {
			if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, streamID).Scan(&version); err != nil {
				return nil, "error", fmt.Errorf("append %s: current version: %w", streamID, err)
			}
		}
		out, err := s.insert(ctx, streamID, version, evs)
		if err == nil {
			return out, "ok", nil
		}
		if !errors.Is(err, errVersionAhead) && !uniqueViolation(err) {
			return nil, "error", fmt.Errorf("append %s: %w", streamID, err)
		}
		// A unique violation: either these events are stored already (a
		// retry) or somebody else took the versions.
		stored, err := s.storedByID(ctx, evs)
		if err != nil {
			return nil, "error", fmt.Errorf("append %s: %w", streamID, err)
		}
		if len(stored) == len(evs) {
			return stored, "idempotent", nil
		}
		if expectedVersion == AnyVersion && attempt < 5 {
			continue
		}
		actual, err := s.Version(ctx, streamID)
		if err != nil {
			return nil, "error", fmt.Errorf("append %s: %w", streamID, err)
		}
		return nil, "conflict", &events.ConflictError{StreamID: streamID, Expected: expectedVersion, Actual: actual}
	}
}

// uniqueViolation reports whether err is PostgreSQL's unique_violation: an
// event id stored already, or a stream version taken.
func uniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// insert stores evs at streamID from version+1 in one statement, and
// applies the inline projections that handle them in its transaction.
func (s *Store) insert(ctx context.Context, streamID string, version int64, evs []events.Envelope) ([]events.Envelope, error) {
	out, md, err := number(streamID, version, evs)
	if err != nil {
		return nil, err
	}
	var q querier = s.pool
	projections := s.inlineFor(evs)
	var tx pgx.Tx
	if len(projections) > 0 {
		if tx, err = s.pool.Begin(ctx); err != nil {
			return nil, err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		q = tx
	}
	b := newBatch(len(out))
	b.add(out, md, version)
	if err := b.insert(ctx, q); err != nil {
		return nil, err
	}
	b.positions(out, 0)
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
