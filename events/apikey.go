package events

// Events of the apikey-… stream: an API key's issue, revocation, limits and suspensions.

// Event type names of this stream. They are past-tense facts and never change once used.
const (
	TypeAPIKeyIssued        = "apikey.issued"
	TypeAPIKeyRevoked       = "apikey.revoked"
	TypeAPIKeyLimitsChanged = "apikey.limits_changed"
	TypeAPIKeySuspended     = "apikey.suspended"
	TypeAPIKeyUnsuspended   = "apikey.unsuspended"
)

// apikeyTypes registers this stream's event types and their schema versions.
var apikeyTypes = map[string]typeInfo{
	TypeAPIKeyIssued:        {version: 1, decode: decoder[APIKeyIssued]()},
	TypeAPIKeyRevoked:       {version: 1, decode: decoder[APIKeyRevoked]()},
	TypeAPIKeyLimitsChanged: {version: 1, decode: decoder[APIKeyLimitsChanged]()},
	TypeAPIKeySuspended:     {version: 1, decode: decoder[APIKeySuspended]()},
	TypeAPIKeyUnsuspended:   {version: 1, decode: decoder[APIKeyUnsuspended]()},
}

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

// APIKeyLimitsChanged: an operator set a key's own, narrower limits.
// Limits is the whole new set, not a difference.
type APIKeyLimitsChanged struct {
	KeyID     string         `json:"key_id"`
	AccountID string         `json:"account_id"`
	Limits    LimitOverrides `json:"limits"`
}

// EventType implements Data.
func (APIKeyLimitsChanged) EventType() string { return TypeAPIKeyLimitsChanged }

// Suspension reasons.
const (
	// SuspendRunaway: the runaway guard saw the key's spend rate pass its ceiling.
	SuspendRunaway = "runaway_spend"
	// SuspendOperator: an operator suspended the key.
	SuspendOperator = "operator"
)

// APIKeySuspended: the key is refused admission until an operator lifts
// the suspension. For the runaway guard it carries the figures that
// tripped it.
type APIKeySuspended struct {
	KeyID     string `json:"key_id"`
	AccountID string `json:"account_id"`
	Reason    string `json:"reason"`
	// SpentNanoUSD was spent within WindowSeconds; CeilingNanoUSD is the
	// plan's ceiling for that window. Both zero for an operator's suspension.
	SpentNanoUSD   int64 `json:"spent_nano_usd"`
	CeilingNanoUSD int64 `json:"ceiling_nano_usd"`
	WindowSeconds  int64 `json:"window_seconds"`
}

// EventType implements Data.
func (APIKeySuspended) EventType() string { return TypeAPIKeySuspended }

// APIKeyUnsuspended: an operator lifted the key's suspension.
type APIKeyUnsuspended struct {
	KeyID     string `json:"key_id"`
	AccountID string `json:"account_id"`
}

// EventType implements Data.
func (APIKeyUnsuspended) EventType() string { return TypeAPIKeyUnsuspended }
