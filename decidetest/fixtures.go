package decidetest

import (
	"encoding/json"
	"time"

	"github.com/tollgate/tollgate/events"
)

// The events the given/when/then cases start from: an account, its key,
// and one completion's request, claim and outcomes.

// Plans is the plan table of the cases: "free" and "pro" exist.
func Plans(name string) bool { return name == "free" || name == "pro" }

// KeyHash is the hash of the cases' API key.
const KeyHash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var (
	Created = events.AccountCreated{AccountID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro"}
	Issued  = events.APIKeyIssued{KeyID: "key_2", AccountID: "acc_1", Name: "prod", KeyHash: KeyHash, KeyPrefix: "tg_live_ab"}
	Revoked = events.APIKeyRevoked{KeyID: "key_2", AccountID: "acc_1"}

	Requested = events.CompletionRequested{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: events.ModeAsync, Request: json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
	}
	Started   = events.CompletionStarted{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: T0.Add(time.Minute)}
	Succeeded = events.CompletionSucceeded{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Provider: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
		Usage:       events.Usage{PromptTokens: 9, CompletionTokens: 12, TotalTokens: 21},
		CostNanoUSD: 8550, LatencyMS: 412, Response: json.RawMessage(`{"id":"chatcmpl-abc123"}`),
	}
	Failed = events.CompletionFailed{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Status: 502, ErrorType: "server_error", ErrorMessage: "all providers failed", LatencyMS: 30012,
	}
)
