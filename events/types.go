package events

import (
	"encoding/json"
	"time"
)

// Event type names. They are past-tense facts and never change once used.
const (
	TypeAccountCreated        = "account.created"
	TypeBillingCustomerLinked = "billing.customer_linked"
	TypeAPIKeyIssued          = "apikey.issued"
	TypeAPIKeyRevoked         = "apikey.revoked"
	TypeCompletionRequested   = "completion.requested"
	TypeCompletionStarted     = "completion.started"
	TypeCompletionSucceeded   = "completion.succeeded"
	TypeCompletionFailed      = "completion.failed"
	TypeBillingRecordClosed   = "billing.record_closed"
	TypeBillingUsageReported  = "billing.usage_reported"
)

// AccountCreated: an operator opened an account.
type AccountCreated struct {
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	Plan      string `json:"plan"`
}

// EventType implements Data.
func (AccountCreated) EventType() string { return TypeAccountCreated }

// BillingCustomerLinked: the account was tied to a Stripe customer, to whom
// its metered usage is reported from now on.
type BillingCustomerLinked struct {
	AccountID        string `json:"account_id"`
	StripeCustomerID string `json:"stripe_customer_id"`
}

// EventType implements Data.
func (BillingCustomerLinked) EventType() string { return TypeBillingCustomerLinked }

// APIKeyIssued: a key was issued. Only a hash of the secret is stored; the
// secret itself was shown once, to the operator who asked for it.
type APIKeyIssued struct {
	KeyID     string `json:"key_id"`
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	// KeyHash is the hex SHA-256 of the secret. The secret has 256 random
	// bits, so a fast hash is as strong as a slow one here and keeps
	// authentication off the hot path's budget.
	KeyHash string `json:"key_hash"`
	// KeyPrefix is the secret's first characters, for operators to tell
	// keys apart.
	KeyPrefix string `json:"key_prefix"`
}

// EventType implements Data.
func (APIKeyIssued) EventType() string { return TypeAPIKeyIssued }

// APIKeyRevoked: the key stops authenticating.
type APIKeyRevoked struct {
	KeyID     string `json:"key_id"`
	AccountID string `json:"account_id"`
}

// EventType implements Data.
func (APIKeyRevoked) EventType() string { return TypeAPIKeyRevoked }

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

// BillingRecordClosed: the billing reporter froze a record's quantity before
// sending it to Stripe. A retry after a crash re-sends exactly this quantity
// under the same identifier; usage that arrives later goes to a new record.
type BillingRecordClosed struct {
	RecordID    string    `json:"record_id"`
	AccountID   string    `json:"account_id"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Quantity    int64     `json:"quantity"`
	Unit        string    `json:"unit"`
	// StripeCustomerID is the customer the record is sent to, frozen with
	// the quantity so a re-send after a crash goes to the same customer
	// even if the account's link changed meanwhile. Empty in events stored
	// before it existed (the account's customer is used then).
	StripeCustomerID string `json:"stripe_customer_id,omitempty"`
}

// EventType implements Data.
func (BillingRecordClosed) EventType() string { return TypeBillingRecordClosed }

// BillingUsageReported: Stripe accepted the record's meter event.
type BillingUsageReported struct {
	RecordID         string    `json:"record_id"`
	AccountID        string    `json:"account_id"`
	StripeCustomerID string    `json:"stripe_customer_id"`
	EventName        string    `json:"event_name"`
	Identifier       string    `json:"identifier"`
	Quantity         int64     `json:"quantity"`
	ReportedAt       time.Time `json:"reported_at"`
}

// EventType implements Data.
func (BillingUsageReported) EventType() string { return TypeBillingUsageReported }
