package events

import (
	"encoding/json"
	"time"
)

// Events of the completion-… stream: a request, its claim, attempts, outcome, lease renewals, requeues, callbacks and the budget reservation with its settlement.

// Event type names of this stream. They are past-tense facts and never change once used.
const (
	TypeCompletionRequested         = "completion.requested"
	TypeCompletionStarted           = "completion.started"
	TypeCompletionSucceeded         = "completion.succeeded"
	TypeCompletionFailed            = "completion.failed"
	TypeCompletionAttemptFailed     = "completion.attempt_failed"
	TypeCompletionAbandoned         = "completion.abandoned"
	TypeCompletionLeaseRenewed      = "completion.lease_renewed"
	TypeCompletionRequeued          = "completion.requeued"
	TypeCompletionCallbackDelivered = "completion.callback_delivered"
	TypeCompletionCallbackFailed    = "completion.callback_failed"
	TypeQuotaReserved               = "quota.reserved"
	TypeQuotaSettled                = "quota.settled"
	TypeQuotaReleased               = "quota.released"
)

// completionTypes registers this stream's event types and their schema versions.
var completionTypes = map[string]typeInfo{
	TypeCompletionRequested:         {version: 1, decode: decoder[CompletionRequested]()},
	TypeCompletionStarted:           {version: 1, decode: decoder[CompletionStarted]()},
	TypeCompletionSucceeded:         {version: 1, decode: decoder[CompletionSucceeded]()},
	TypeCompletionFailed:            {version: 1, decode: decoder[CompletionFailed]()},
	TypeCompletionAttemptFailed:     {version: 1, decode: decoder[CompletionAttemptFailed]()},
	TypeCompletionAbandoned:         {version: 1, decode: decoder[CompletionAbandoned]()},
	TypeCompletionLeaseRenewed:      {version: 1, decode: decoder[CompletionLeaseRenewed]()},
	TypeCompletionRequeued:          {version: 1, decode: decoder[CompletionRequeued]()},
	TypeCompletionCallbackDelivered: {version: 1, decode: decoder[CompletionCallbackDelivered]()},
	TypeCompletionCallbackFailed:    {version: 1, decode: decoder[CompletionCallbackFailed]()},
	TypeQuotaReserved:               {version: 1, decode: decoder[QuotaReserved]()},
	TypeQuotaSettled:                {version: 1, decode: decoder[QuotaSettled]()},
	TypeQuotaReleased:               {version: 1, decode: decoder[QuotaReleased]()},
}

// Execution modes of a completion.
const (
	// ModeSync: executed by the API instance holding the client connection.
	ModeSync = "sync"
	// ModeAsync: queued; executed by the worker pool from the bus.
	ModeAsync = "async"
)

// CompletionRequested: a client asked for a chat completion.
type CompletionRequested struct {
	CompletionID string `json:"completion_id"`
	AccountID    string `json:"account_id"`
	KeyID        string `json:"key_id"`
	// Model is the client-facing model name from the config.
	Model string `json:"model"`
	// Mode is ModeSync or ModeAsync.
	Mode string `json:"mode"`
	// Request is the client's OpenAI request body. It is kept so that a
	// queued job can be executed by any worker; it is never logged.
	Request json.RawMessage `json:"request"`
}

// EventType implements Data.
func (CompletionRequested) EventType() string { return TypeCompletionRequested }

// CompletionStarted: an executor claimed the request. Only one claim can
// succeed (it is appended at an expected stream version), so the provider is
// called at most once per claim.
type CompletionStarted struct {
	CompletionID string `json:"completion_id"`
	// Executor names the claiming process: "api:<instance>" or "worker:<instance>".
	Executor string `json:"executor"`
	// LeaseExpiresAt is when the claim may be considered dead.
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}

// EventType implements Data.
func (CompletionStarted) EventType() string { return TypeCompletionStarted }

// Usage is a completion's token counts.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	// Estimated is true when Tollgate counted the tokens itself because the
	// provider reported none.
	Estimated bool `json:"estimated"`
}

// CompletionSucceeded: the provider answered; usage and cost are final.
type CompletionSucceeded struct {
	CompletionID  string `json:"completion_id"`
	AccountID     string `json:"account_id"`
	KeyID         string `json:"key_id"`
	Model         string `json:"model"`
	Provider      string `json:"provider"`
	UpstreamModel string `json:"upstream_model"`
	Usage         Usage  `json:"usage"`
	// CostNanoUSD is the price table applied to Usage, in nano-USD.
	CostNanoUSD int64 `json:"cost_nano_usd"`
	LatencyMS   int64 `json:"latency_ms"`
	// Response is the OpenAI response body returned to the client; for a
	// stream, the chat.completion its chunks amount to.
	Response json.RawMessage `json:"response"`
	// Stream is true when the client received the answer as a stream.
	Stream bool `json:"stream,omitempty"`
	// Interrupted says why a stream ended before the provider finished
	// (client_disconnected, upstream_error); what was generated until then
	// is billed.
	Interrupted string `json:"interrupted,omitempty"`
	// TTFTMS is a stream's time to first token.
	TTFTMS int64 `json:"ttft_ms,omitempty"`
}

// EventType implements Data.
func (CompletionSucceeded) EventType() string { return TypeCompletionSucceeded }

// CompletionFailed: the request ended without an answer; nothing is billed.
type CompletionFailed struct {
	CompletionID string `json:"completion_id"`
	AccountID    string `json:"account_id"`
	KeyID        string `json:"key_id"`
	Model        string `json:"model"`
	// Status is the HTTP status the client got (or would get).
	Status int `json:"status"`
	// ErrorType and ErrorCode follow OpenAI's error body.
	ErrorType    string `json:"error_type"`
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message"`
	Provider     string `json:"provider,omitempty"`
	LatencyMS    int64  `json:"latency_ms"`
}

// EventType implements Data.
func (CompletionFailed) EventType() string { return TypeCompletionFailed }

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

// QuotaReserved: admission reserved a completion's worst-case cost against
// the budgets of its account and key for Day and Month. It is appended
// with completion.requested, in the completion's stream.
type QuotaReserved struct {
	CompletionID string `json:"completion_id"`
	AccountID    string `json:"account_id"`
	KeyID        string `json:"key_id"`
	// CostNanoUSD is the worst case: the prompt estimate plus the largest
	// completion the request allows, at the model's price.
	CostNanoUSD int64 `json:"cost_nano_usd"`
	// Tokens is what the request counts against tokens per minute.
	Tokens int64 `json:"tokens"`
	// Day (YYYY-MM-DD) and Month (YYYY-MM) are the UTC budget periods charged.
	Day   string `json:"day"`
	Month string `json:"month"`
	// ExpiresAt is when an unfinished reservation is released.
	ExpiresAt time.Time `json:"expires_at"`
}

// EventType implements Data.
func (QuotaReserved) EventType() string { return TypeQuotaReserved }

// QuotaSettled: the completion succeeded; its real cost is spent and the
// rest of the reservation released. Appended with completion.succeeded.
type QuotaSettled struct {
	CompletionID    string `json:"completion_id"`
	AccountID       string `json:"account_id"`
	KeyID           string `json:"key_id"`
	ReservedNanoUSD int64  `json:"reserved_nano_usd"`
	CostNanoUSD     int64  `json:"cost_nano_usd"`
	ReservedTokens  int64  `json:"reserved_tokens"`
	Tokens          int64  `json:"tokens"`
	Day             string `json:"day"`
	Month           string `json:"month"`
}

// EventType implements Data.
func (QuotaSettled) EventType() string { return TypeQuotaSettled }

// Release reasons.
const (
	ReleaseFailed    = "failed"
	ReleaseAbandoned = "abandoned"
)

// QuotaReleased: the completion ended without cost (failed, abandoned);
// its whole reservation is released.
type QuotaReleased struct {
	CompletionID    string `json:"completion_id"`
	AccountID       string `json:"account_id"`
	KeyID           string `json:"key_id"`
	ReservedNanoUSD int64  `json:"reserved_nano_usd"`
	ReservedTokens  int64  `json:"reserved_tokens"`
	Reason          string `json:"reason"`
	Day             string `json:"day"`
	Month           string `json:"month"`
}

// EventType implements Data.
func (QuotaReleased) EventType() string { return TypeQuotaReleased }
