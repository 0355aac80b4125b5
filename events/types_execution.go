package events

import "time"

// Event types of running completions beyond the end-to-end slice.
const (
	TypeCompletionAttemptFailed     = "completion.attempt_failed"
	TypeCompletionAbandoned         = "completion.abandoned"
	TypeCompletionLeaseRenewed      = "completion.lease_renewed"
	TypeCompletionRequeued          = "completion.requeued"
	TypeCompletionCallbackDelivered = "completion.callback_delivered"
	TypeCompletionCallbackFailed    = "completion.callback_failed"
)

// executionTypes are the event types of execution: attempts, abandonment
// and result callbacks.
var executionTypes = map[string]typeInfo{
	TypeCompletionAttemptFailed:     {version: 1, decode: decoder[CompletionAttemptFailed]()},
	TypeCompletionAbandoned:         {version: 1, decode: decoder[CompletionAbandoned]()},
	TypeCompletionLeaseRenewed:      {version: 1, decode: decoder[CompletionLeaseRenewed]()},
	TypeCompletionRequeued:          {version: 1, decode: decoder[CompletionRequeued]()},
	TypeCompletionCallbackDelivered: {version: 1, decode: decoder[CompletionCallbackDelivered]()},
	TypeCompletionCallbackFailed:    {version: 1, decode: decoder[CompletionCallbackFailed]()},
}

// CompletionAttemptFailed: one attempt at one deployment failed; the
// executor retried, fell back, or gave up (then completion.failed follows).
type CompletionAttemptFailed struct {
	CompletionID  string `json:"completion_id"`
	Attempt       int    `json:"attempt"`
	Provider      string `json:"provider"`
	UpstreamModel string `json:"upstream_model"`
	// Status is the upstream's HTTP status, 0 when there was no answer.
	Status int `json:"status"`
	// ErrorClass is rate_limited, server_error, timeout, connection,
	// client_error or cooling_down.
	ErrorClass   string `json:"error_class"`
	ErrorMessage string `json:"error_message"`
	LatencyMS    int64  `json:"latency_ms"`
	Retryable    bool   `json:"retryable"`
}

// EventType implements Data.
func (CompletionAttemptFailed) EventType() string { return TypeCompletionAttemptFailed }

// CompletionAbandoned: the executor's claim expired without an outcome (it
// died or hung); whatever it reserved is released and nothing is billed.
type CompletionAbandoned struct {
	CompletionID   string    `json:"completion_id"`
	AccountID      string    `json:"account_id"`
	KeyID          string    `json:"key_id"`
	Model          string    `json:"model"`
	Executor       string    `json:"executor"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	Reason         string    `json:"reason"`
}

// EventType implements Data.
func (CompletionAbandoned) EventType() string { return TypeCompletionAbandoned }

// CompletionLeaseRenewed: the executor holding the claim is still working
// on it (a provider call in flight, a stream flowing) and extended its
// lease to LeaseExpiresAt. It is appended at the stream's version, by the
// claim holder only, after a third of the lease has passed: short
// requests have none. Renewal is the count on this claim (1, 2, …).
// ReservationExpiresAt, when set, is the new end of the completion's
// budget reservation, moved with the lease so that it outlives it by as
// much as it did at the claim: a request that runs for an hour keeps its
// reservation for an hour, and concurrent admissions keep counting it.
type CompletionLeaseRenewed struct {
	CompletionID         string    `json:"completion_id"`
	Executor             string    `json:"executor"`
	LeaseExpiresAt       time.Time `json:"lease_expires_at"`
	Renewal              int       `json:"renewal"`
	ReservationExpiresAt time.Time `json:"reservation_expires_at,omitzero"`
}

// EventType implements Data.
func (CompletionLeaseRenewed) EventType() string { return TypeCompletionLeaseRenewed }

// CompletionRequeued: the executor's claim of a queued (async) job expired
// without an outcome, and the job went back to the queue for another
// executor (jobs.on_expired_lease: retry). Its budget reservation stays
// held: the retry settles it. Retry counts the requeues so far (1, 2, …).
type CompletionRequeued struct {
	CompletionID   string    `json:"completion_id"`
	AccountID      string    `json:"account_id"`
	KeyID          string    `json:"key_id"`
	Model          string    `json:"model"`
	Executor       string    `json:"executor"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	Retry          int       `json:"retry"`
	Reason         string    `json:"reason"`
}

// EventType implements Data.
func (CompletionRequeued) EventType() string { return TypeCompletionRequeued }

// CompletionCallbackDelivered: the job's result reached its callback URL.
type CompletionCallbackDelivered struct {
	CompletionID string `json:"completion_id"`
	URL          string `json:"url"`
	Status       int    `json:"status"`
	Attempts     int    `json:"attempts"`
}

// EventType implements Data.
func (CompletionCallbackDelivered) EventType() string { return TypeCompletionCallbackDelivered }

// CompletionCallbackFailed: every delivery attempt to the callback URL
// failed; the result stays available at GET /v1/jobs/{id}.
type CompletionCallbackFailed struct {
	CompletionID string `json:"completion_id"`
	URL          string `json:"url"`
	Status       int    `json:"status"`
	Attempts     int    `json:"attempts"`
	Error        string `json:"error"`
}

// EventType implements Data.
func (CompletionCallbackFailed) EventType() string { return TypeCompletionCallbackFailed }
