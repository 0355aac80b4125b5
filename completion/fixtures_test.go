package completion_test

import (
	"encoding/json"
	"time"

	"github.com/tollgate/tollgate/decidetest"
	"github.com/tollgate/tollgate/events"
)

// Events the given/when/then cases of this package start from.

func plans(name string) bool { return name == "free" || name == "pro" }

const keyHash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var (
	created = events.AccountCreated{AccountID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro"}
	issued  = events.APIKeyIssued{KeyID: "key_2", AccountID: "acc_1", Name: "prod", KeyHash: keyHash, KeyPrefix: "tg_live_ab"}
	revoked = events.APIKeyRevoked{KeyID: "key_2", AccountID: "acc_1"}

	requested = events.CompletionRequested{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: events.ModeAsync, Request: json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
	}
	started   = events.CompletionStarted{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: decidetest.T0.Add(time.Minute)}
	succeeded = events.CompletionSucceeded{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Provider: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
		Usage:       events.Usage{PromptTokens: 9, CompletionTokens: 12, TotalTokens: 21},
		CostNanoUSD: 8550, LatencyMS: 412, Response: json.RawMessage(`{"id":"chatcmpl-abc123"}`),
	}
	failed = events.CompletionFailed{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Status: 502, ErrorType: "server_error", ErrorMessage: "all providers failed", LatencyMS: 30012,
	}
)
