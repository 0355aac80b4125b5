package schemas_test

import "github.com/tollgate/tollgate/events"

func quotaPtr(v int64) *int64 { return &v }

// quotaExamples returns one valid event of each of the area's types.
func quotaExamples() map[string]example {
	type ex = example
	at := exampleTime()
	return map[string]ex{
		events.TypeAccountPlanChanged: {"account-acc_1", events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "free", Plan: "pro"}},
		events.TypeAccountLimitsChanged: {"account-acc_1", events.AccountLimitsChanged{AccountID: "acc_1", Limits: events.LimitOverrides{
			RequestsPerMinute: quotaPtr(100), DailyBudgetNanoUSD: quotaPtr(2_000_000_000),
		}}},
		events.TypeAPIKeyLimitsChanged: {"apikey-key_2", events.APIKeyLimitsChanged{KeyID: "key_2", AccountID: "acc_1", Limits: events.LimitOverrides{
			RequestsPerMinute: quotaPtr(10), TokensPerMinute: quotaPtr(5000), DailyBudgetNanoUSD: quotaPtr(500_000_000), MonthlyBudgetNanoUSD: quotaPtr(1_000_000_000),
		}}},
		events.TypeAPIKeySuspended: {"apikey-key_2", events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendRunaway,
			SpentNanoUSD: 600_000_000, CeilingNanoUSD: 500_000_000, WindowSeconds: 300}},
		events.TypeAPIKeyUnsuspended: {"apikey-key_2", events.APIKeyUnsuspended{KeyID: "key_2", AccountID: "acc_1"}},
		events.TypeQuotaReserved: {"completion-chatcmpl-abc123", events.QuotaReserved{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2",
			CostNanoUSD: 1_234_000, Tokens: 4200, Day: "2026-03-14", Month: "2026-03", ExpiresAt: at}},
		events.TypeQuotaSettled: {"completion-chatcmpl-abc123", events.QuotaSettled{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2",
			ReservedNanoUSD: 1_234_000, CostNanoUSD: 21_000, ReservedTokens: 4200, Tokens: 42, Day: "2026-03-14", Month: "2026-03"}},
		events.TypeQuotaReleased: {"completion-chatcmpl-abc123", events.QuotaReleased{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2",
			ReservedNanoUSD: 1_234_000, ReservedTokens: 4200, Reason: events.ReleaseAbandoned, Day: "2026-03-14", Month: "2026-03"}},
	}
}
