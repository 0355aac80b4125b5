package events_test

import (
	"time"

	"github.com/tollgate/tollgate/events"
)

var executionExamples = []events.Data{
	events.CompletionAttemptFailed{
		CompletionID: "chatcmpl-abc", Attempt: 1, Provider: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
		Status: 429, ErrorClass: "rate_limited", ErrorMessage: "Rate limit reached", LatencyMS: 88, Retryable: true,
	},
	events.CompletionAbandoned{
		CompletionID: "chatcmpl-abc", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: at.Add(10 * time.Minute), Reason: "lease_expired",
	},
	events.CompletionLeaseRenewed{
		CompletionID: "chatcmpl-abc", Executor: "worker:w1", LeaseExpiresAt: at.Add(13 * time.Minute), Renewal: 1,
	},
	events.CompletionRequeued{
		CompletionID: "chatcmpl-abc", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: at.Add(10 * time.Minute), Retry: 1, Reason: "lease_expired",
	},
	events.CompletionCallbackDelivered{CompletionID: "chatcmpl-abc", URL: "https://hooks.acme.example/tollgate", Status: 204, Attempts: 2},
	events.CompletionCallbackFailed{
		CompletionID: "chatcmpl-abc", URL: "https://hooks.acme.example/tollgate", Status: 503, Attempts: 8,
		Error: "receiver answered 503 Service Unavailable",
	},
}
