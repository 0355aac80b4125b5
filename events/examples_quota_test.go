package events_test

import "github.com/tollgate/tollgate/events"

func quotaPtr(v int64) *int64 { return &v }

var quotaExamples = []events.Data{
	events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "free", Plan: "pro"},
	events.AccountLimitsChanged{AccountID: "acc_1", Limits: events.LimitOverrides{
		RequestsPerMinute: quotaPtr(100), TokensPerMinute: quotaPtr(50_000), DailyBudgetNanoUSD: quotaPtr(2_000_000_000), MonthlyBudgetNanoUSD: quotaPtr(20_000_000_000),
	}},
	events.APIKeyLimitsChanged{KeyID: "key_2", AccountID: "acc_1", Limits: events.LimitOverrides{
		RequestsPerMinute: quotaPtr(10), TokensPerMinute: quotaPtr(5_000), DailyBudgetNanoUSD: quotaPtr(500_000_000), MonthlyBudgetNanoUSD: quotaPtr(1_000_000_000),
	}},
	events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendRunaway,
		SpentNanoUSD: 600_000_000, CeilingNanoUSD: 500_000_000, WindowSeconds: 300},
	events.APIKeyUnsuspended{KeyID: "key_2", AccountID: "acc_1"},
	events.QuotaReserved{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", CostNanoUSD: 1_234_000,
		Tokens: 4200, Day: "2026-03-14", Month: "2026-03", ExpiresAt: at},
	events.QuotaSettled{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", ReservedNanoUSD: 1_234_000,
		CostNanoUSD: 21_000, ReservedTokens: 4200, Tokens: 42, Day: "2026-03-14", Month: "2026-03"},
	events.QuotaReleased{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", ReservedNanoUSD: 1_234_000,
		ReservedTokens: 4200, Reason: events.ReleaseFailed, Day: "2026-03-14", Month: "2026-03"},
}
