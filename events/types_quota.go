package events

import "time"

// Event types of quotas: plan and limit changes, key suspension, and the
// budget reservations and settlements of completions.
const (
	TypeAccountPlanChanged   = "account.plan_changed"
	TypeAccountLimitsChanged = "account.limits_changed"
	TypeAPIKeyLimitsChanged  = "apikey.limits_changed"
	TypeAPIKeySuspended      = "apikey.suspended"
	TypeAPIKeyUnsuspended    = "apikey.unsuspended"
	TypeQuotaReserved        = "quota.reserved"
	TypeQuotaSettled         = "quota.settled"
	TypeQuotaReleased        = "quota.released"
)

// quotaTypes are the event types of quotas: plan and limit changes, budget reservations and settlements, key suspension.
var quotaTypes = map[string]typeInfo{
	TypeAccountPlanChanged:   {version: 1, decode: decoder[AccountPlanChanged]()},
	TypeAccountLimitsChanged: {version: 1, decode: decoder[AccountLimitsChanged]()},
	TypeAPIKeyLimitsChanged:  {version: 1, decode: decoder[APIKeyLimitsChanged]()},
	TypeAPIKeySuspended:      {version: 1, decode: decoder[APIKeySuspended]()},
	TypeAPIKeyUnsuspended:    {version: 1, decode: decoder[APIKeyUnsuspended]()},
	TypeQuotaReserved:        {version: 1, decode: decoder[QuotaReserved]()},
	TypeQuotaSettled:         {version: 1, decode: decoder[QuotaSettled]()},
	TypeQuotaReleased:        {version: 1, decode: decoder[QuotaReleased]()},
}

// LimitOverrides are limits set on an account or a key on top of its
// plan. A nil field takes the plan's value (for a key: the account's); a
// set field replaces it. Budgets are in nano-USD.
type LimitOverrides struct {
	RequestsPerMinute    *int64 `json:"requests_per_minute"`
	TokensPerMinute      *int64 `json:"tokens_per_minute"`
	DailyBudgetNanoUSD   *int64 `json:"daily_budget_nano_usd"`
	MonthlyBudgetNanoUSD *int64 `json:"monthly_budget_nano_usd"`
}

// AccountPlanChanged: an operator (or billing) moved the account to
// another plan; its limits follow from the next request on.
type AccountPlanChanged struct {
	AccountID string `json:"account_id"`
	FromPlan  string `json:"from_plan"`
	Plan      string `json:"plan"`
}

// EventType implements Data.
func (AccountPlanChanged) EventType() string { return TypeAccountPlanChanged }

// AccountLimitsChanged: an operator set the account's limit overrides.
// Limits is the whole new set, not a difference.
type AccountLimitsChanged struct {
	AccountID string         `json:"account_id"`
	Limits    LimitOverrides `json:"limits"`
}

// EventType implements Data.
func (AccountLimitsChanged) EventType() string { return TypeAccountLimitsChanged }

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
