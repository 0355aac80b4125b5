package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/events"
)

// Message metadata keys. On Kafka they become record headers; the ce_
// ones are the CloudEvents 1.0 Kafka binary-mode attributes.
const (
	// MetaSpecVersion is the CloudEvents version, SpecVersion.
	MetaSpecVersion = "ce_specversion"
	// MetaID is the event id.
	MetaID = "ce_id"
	// MetaType is the event type, such as "completion.requested".
	MetaType = "ce_type"
	// MetaSource is the producer, DefaultSource unless configured.
	MetaSource = "ce_source"
	// MetaTime is when the event occurred, RFC 3339 with nanoseconds.
	MetaTime = "ce_time"
	// MetaSubject is the event's stream id.
	MetaSubject = "ce_subject"
	// MetaContentType is the payload's media type, ContentType.
	MetaContentType = "content-type"
	// MetaAccountID is the event's account, also the Kafka record key.
	MetaAccountID = "account_id"
)

const (
	// SpecVersion is the CloudEvents version the messages follow.
	SpecVersion = "1.0"
	// DefaultSource is the CloudEvents source of Tollgate's events.
	DefaultSource = "tollgate"
	// ContentType is the media type of message payloads.
	ContentType = "application/json"
)

// ToMessage returns the bus message of e with DefaultSource as its
// CloudEvents source.
func ToMessage(e events.Envelope) (*message.Message, error) {
	return ToMessageWithSource(e, DefaultSource)
}

// ToMessageWithSource returns the bus message of e: its UUID is the event
// id, its payload the JSON envelope, and its metadata the CloudEvents
// attributes, the content type and the account id.
func ToMessageWithSource(e events.Envelope, source string) (*message.Message, error) {
	if e.EventID == uuid.Nil {
		return nil, errors.New("bus: event without an id")
	}
	if e.Type == "" {
		return nil, fmt.Errorf("bus: event %s without a type", e.EventID)
	}
	if source == "" {
		source = DefaultSource
	}
	// The envelope as json.Marshal writes it, without re-validating and
	// re-compacting Data: the store's is valid JSON already.
	md := e.Metadata
	size := 320 + len(e.StreamID) + len(e.Type) + len(e.Data) + len(md.AccountID) + len(md.CorrelationID) + len(md.CausationID) + len(md.Actor)
	payload, err := e.AppendJSON(make([]byte, 0, size))
	if err != nil {
		return nil, fmt.Errorf("bus: marshal event %s: %w", e.EventID, err)
	}
	id := e.EventID.String()
	m := message.NewMessage(id, payload)
	m.Metadata = make(message.Metadata, 8)
	m.Metadata.Set(MetaSpecVersion, SpecVersion)
	m.Metadata.Set(MetaID, id)
	m.Metadata.Set(MetaType, e.Type)
	m.Metadata.Set(MetaSource, source)
	m.Metadata.Set(MetaTime, e.OccurredAt.UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(MetaSubject, e.StreamID)
	m.Metadata.Set(MetaContentType, ContentType)
	m.Metadata.Set(MetaAccountID, md.AccountID)
	return m, nil
}

// FromMessage returns the event a bus message carries. It fails when the
// payload is not an envelope or contradicts the message's ce_id.
func FromMessage(m *message.Message) (events.Envelope, error) {
	var e events.Envelope
	if err := json.Unmarshal(m.Payload, &e); err != nil {
		return events.Envelope{}, fmt.Errorf("bus: message %s: decode envelope: %w", m.UUID, err)
	}
	if e.EventID == uuid.Nil {
		return events.Envelope{}, fmt.Errorf("bus: message %s: envelope without an event id", m.UUID)
	}
	if id := m.Metadata.Get(MetaID); id != "" && id != e.EventID.String() {
		return events.Envelope{}, fmt.Errorf("bus: message %s: ce_id %s does not match event id %s", m.UUID, id, e.EventID)
	}
	return e, nil
}

// PartitionKey is the Kafka record key of a message: its account, so one
// account's events stay in order; for an event of no account, its stream
// (ce_subject); failing that, the message UUID.
func PartitionKey(m *message.Message) string {
	if k := m.Metadata.Get(MetaAccountID); k != "" {
		return k
	}
	if k := m.Metadata.Get(MetaSubject); k != "" {
		return k
	}
	return m.UUID
}

func partitionKey(_ string, m *message.Message) (string, error) {
	return PartitionKey(m), nil
}

// JobsTopic carries the queued (async) completion requests the worker pool
// executes, so workers read only their work, not the whole event stream.
const JobsTopic = "tollgate.jobs"

// JobTypes returns the event types IsJob can select: the relay reads only
// these when it publishes the jobs topic alone.
func JobTypes() []string {
	return []string{events.TypeCompletionRequested, events.TypeCompletionRequeued}
}

// IsJob reports whether e is a queued completion request for the workers
// (completion.QueuedJob decides).
func IsJob(e events.Envelope) bool {
	if e.Type != events.TypeCompletionRequested && e.Type != events.TypeCompletionRequeued {
		return false // not decoded: the relay asks this of every event
	}
	d, err := events.Decode(e)
	if err != nil {
		return false
	}
	_, ok := completion.QueuedJob(d)
	return ok
}

// EventPublisher publishes events through a Watermill publisher as
// CloudEvents messages (ToMessageWithSource): the outbox relay's
// Publisher on Kafka or PostgreSQL.
type EventPublisher struct {
	Publisher message.Publisher
	// Source is the messages' CloudEvents source; DefaultSource when empty.
	Source string
}

// Publish sends evs to topic in order, in one Publish call.
func (p EventPublisher) Publish(ctx context.Context, topic string, evs ...events.Envelope) error {
	msgs := make([]*message.Message, len(evs))
	for i, e := range evs {
		m, err := ToMessageWithSource(e, p.Source)
		if err != nil {
			return fmt.Errorf("event at %d: %w", e.Position, err)
		}
		m.SetContext(ctx)
		msgs[i] = m
	}
	return p.Publisher.Publish(topic, msgs...)
}
