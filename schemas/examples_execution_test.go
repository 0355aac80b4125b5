package schemas_test

import (
	"time"

	"github.com/tollgate/tollgate/events"
)

// executionExamples returns one valid event of each of the area's types.
func executionExamples() map[string]example {
	at := exampleTime()
	const stream = "completion-chatcmpl-abc123"
	return map[string]example{
		events.TypeCompletionAttemptFailed: {stream, events.CompletionAttemptFailed{
			CompletionID: "chatcmpl-abc123", Attempt: 2, Provider: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
			Status: 0, ErrorClass: "timeout", ErrorMessage: "no answer within 30s", LatencyMS: 30001, Retryable: true,
		}},
		events.TypeCompletionAbandoned: {stream, events.CompletionAbandoned{
			CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
			Executor: "worker:w-7f", LeaseExpiresAt: at.Add(10 * time.Minute), Reason: "lease_expired",
		}},
		events.TypeCompletionLeaseRenewed: {stream, events.CompletionLeaseRenewed{
			CompletionID: "chatcmpl-abc123", Executor: "api:api-1", LeaseExpiresAt: at.Add(13*time.Minute + 20*time.Second), Renewal: 1,
		}},
		events.TypeCompletionRequeued: {stream, events.CompletionRequeued{
			CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
			Executor: "worker:w-7f", LeaseExpiresAt: at.Add(10 * time.Minute), Retry: 2, Reason: "lease_expired",
		}},
		events.TypeCompletionCallbackDelivered: {stream, events.CompletionCallbackDelivered{
			CompletionID: "chatcmpl-abc123", URL: "https://hooks.acme.example/tollgate?src=jobs", Status: 200, Attempts: 1,
		}},
		events.TypeCompletionCallbackFailed: {stream, events.CompletionCallbackFailed{
			CompletionID: "chatcmpl-abc123", URL: "http://127.0.0.1:9999/cb", Status: 0, Attempts: 8,
			Error: "connection refused",
		}},
	}
}
