// Package events defines Tollgate's facts: the envelope every event travels
// in, the data of each event type, and the registry that maps type names and
// schema versions to Go types (with upcasters from older versions).
//
// The package is pure: it imports no driver. The PostgreSQL event store lives
// in events/pgstore and the outbox relay in events/outbox.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Envelope is one stored fact. Everything but Data and Metadata is fixed by
// the store's schema, so readers can filter without decoding the payload.
type Envelope struct {
	// EventID identifies the fact. Appending an event whose id is already
	// stored appends nothing: this is what makes retried commands and
	// redelivered webhooks idempotent, so ids are derived from the cause
	// (request id, Stripe event id) rather than drawn at random where
	// possible.
	EventID uuid.UUID `json:"event_id"`
	// StreamID names the aggregate: "account-acc_…", "apikey-key_…",
	// "completion-chatcmpl-…", "billingrecord-br_…".
	StreamID string `json:"stream_id"`
	// StreamVersion counts the stream's events from 1 without gaps.
	StreamVersion int64 `json:"stream_version"`
	// Type is a past-tense fact name such as "completion.requested".
	Type string `json:"type"`
	// SchemaVersion is the version of Data's JSON Schema in schemas/events.
	SchemaVersion int `json:"schema_version"`
	// OccurredAt is when the fact happened, in UTC.
	OccurredAt time.Time `json:"occurred_at"`
	// Data is the type's payload as JSON.
	Data json.RawMessage `json:"data"`
	// Metadata carries who and why.
	Metadata Metadata `json:"metadata"`
	// Position is the event's global position, assigned by the store; zero
	// until stored. Positions increase with the store's global order but
	// can have gaps (a rolled-back transaction burns its numbers).
	Position int64 `json:"position,omitempty"`
	// decoded is Data decoded, for an envelope made by New in this
	// process: Decode returns it instead of decoding Data again.
	decoded Data
}

// Metadata is the envelope's who-and-why.
type Metadata struct {
	// AccountID is the tenant the event belongs to; it is also the bus
	// partition key, so one account's events stay in order.
	AccountID string `json:"account_id,omitempty"`
	// CorrelationID ties together everything one client request caused.
	CorrelationID string `json:"correlation_id,omitempty"`
	// CausationID is the id of the command or event that caused this one.
	CausationID string `json:"causation_id,omitempty"`
	// Actor is who acted: "admin", "key:key_…", "worker:…", "stripe", "system".
	Actor string `json:"actor,omitempty"`
}

// Data is implemented by every event payload type.
type Data interface {
	// EventType is the payload's event type name.
	EventType() string
}

// New builds an envelope for data. The event id is derived from idSeed when
// it is not empty (so the same cause always yields the same id) and random
// otherwise. StreamVersion is left zero: the store assigns versions.
func New(streamID string, data Data, md Metadata, at time.Time, idSeed string) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("marshal %s: %w", data.EventType(), err)
	}
	t, ok := registry[data.EventType()]
	if !ok {
		return Envelope{}, fmt.Errorf("event type %q: %w", data.EventType(), ErrUnknownType)
	}
	id := uuid.New()
	if idSeed != "" {
		id = DeriveID(idSeed)
	}
	return Envelope{
		EventID:       id,
		StreamID:      streamID,
		Type:          data.EventType(),
		SchemaVersion: t.version,
		OccurredAt:    at.UTC(),
		Data:          raw,
		Metadata:      md,
		decoded:       data,
	}, nil
}

// idNamespace scopes derived event ids to Tollgate.
var idNamespace = uuid.MustParse("4f1e7a52-2b0c-4e59-9d7e-6a1c3b8f0d21")

// DeriveID returns the event id for a cause, stable across retries.
func DeriveID(seed string) uuid.UUID {
	return uuid.NewSHA1(idNamespace, []byte(seed))
}

// ErrUnknownType is returned for an event type the registry does not know.
var ErrUnknownType = errors.New("unknown event type")

// ErrConflict is the sentinel matched by errors.Is for a *ConflictError.
var ErrConflict = errors.New("stream version conflict")

// ConflictError reports that a stream was not at the version an append
// expected: somebody else appended first.
type ConflictError struct {
	StreamID string
	Expected int64
	Actual   int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %s: expected version %d, found %d", e.StreamID, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
