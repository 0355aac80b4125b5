package commands_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
)

func quotaI64(v int64) *int64 { return &v }

var (
	limits10     = events.LimitOverrides{RequestsPerMinute: quotaI64(10), DailyBudgetNanoUSD: quotaI64(1_000_000_000)}
	suspendedRun = events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendRunaway,
		SpentNanoUSD: 600, CeilingNanoUSD: 500, WindowSeconds: 300}
	reserved = events.QuotaReserved{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2",
		CostNanoUSD: 5000, Tokens: 1200, Day: "2026-03-14", Month: "2026-03", ExpiresAt: t0.Add(15 * time.Minute)}
)

func TestDecideAccountQuota(t *testing.T) {
	plan := func(p string) func(commands.Account) ([]events.Data, error) {
		return func(a commands.Account) ([]events.Data, error) {
			return commands.DecideChangePlan(a, commands.ChangePlan{Plan: p}, plans)
		}
	}
	lim := func(l events.LimitOverrides) func(commands.Account) ([]events.Data, error) {
		return func(a commands.Account) ([]events.Data, error) { return commands.DecideChangeAccountLimits(a, l) }
	}
	run(t, "account-acc_1", commands.FoldAccount, []gwt[commands.Account]{
		{name: "plan change", given: []events.Data{created}, when: plan("free"),
			then: []events.Data{events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "pro", Plan: "free"}}},
		{name: "plan change to the same plan is a no-op", given: []events.Data{created}, when: plan("pro"), then: nil},
		{name: "plan back and forth folds", given: []events.Data{created, events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "pro", Plan: "free"}},
			when: plan("pro"), then: []events.Data{events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "free", Plan: "pro"}}},
		{name: "unknown plan", given: []events.Data{created}, when: plan("gold"), err: commands.ErrInvalid, field: "plan"},
		{name: "plan of a missing account", when: plan("free"), err: commands.ErrNotFound},
		{name: "limits set", given: []events.Data{created}, when: lim(limits10),
			then: []events.Data{events.AccountLimitsChanged{AccountID: "acc_1", Limits: limits10}}},
		{name: "same limits are a no-op", given: []events.Data{created, events.AccountLimitsChanged{AccountID: "acc_1", Limits: limits10}},
			when: lim(events.LimitOverrides{RequestsPerMinute: quotaI64(10), DailyBudgetNanoUSD: quotaI64(1_000_000_000)}), then: nil},
		{name: "negative limit", given: []events.Data{created}, when: lim(events.LimitOverrides{TokensPerMinute: quotaI64(-1)}),
			err: commands.ErrInvalid, field: "tokens_per_minute"},
		{name: "limits of a missing account", when: lim(limits10), err: commands.ErrNotFound},
	})
}

func TestDecideAPIKeyQuota(t *testing.T) {
	guard := func(spent int64) func(commands.APIKey) ([]events.Data, error) {
		return func(k commands.APIKey) ([]events.Data, error) {
			return commands.DecideRunawayGuard(k, commands.RunawayGuard{Spent: spent, Ceiling: 500, WindowSeconds: 300})
		}
	}
	lim := func(k commands.APIKey) ([]events.Data, error) { return commands.DecideChangeAPIKeyLimits(k, limits10) }
	run(t, "apikey-key_2", commands.FoldAPIKey, []gwt[commands.APIKey]{
		{name: "key limits set", given: []events.Data{issued}, when: lim,
			then: []events.Data{events.APIKeyLimitsChanged{KeyID: "key_2", AccountID: "acc_1", Limits: limits10}}},
		{name: "limits of a revoked key", given: []events.Data{issued, revoked}, when: lim, err: commands.ErrRevoked},
		{name: "limits of a missing key", when: lim, err: commands.ErrNotFound},
		{name: "operator suspends", given: []events.Data{issued}, when: commands.DecideSuspendAPIKey,
			then: []events.Data{events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendOperator}}},
		{name: "suspending a suspended key is a no-op", given: []events.Data{issued, suspendedRun}, when: commands.DecideSuspendAPIKey, then: nil},
		{name: "suspending a revoked key", given: []events.Data{issued, revoked}, when: commands.DecideSuspendAPIKey, err: commands.ErrRevoked},
		{name: "operator lifts a suspension", given: []events.Data{issued, suspendedRun}, when: commands.DecideUnsuspendAPIKey,
			then: []events.Data{events.APIKeyUnsuspended{KeyID: "key_2", AccountID: "acc_1"}}},
		{name: "lifting no suspension is a no-op", given: []events.Data{issued}, when: commands.DecideUnsuspendAPIKey, then: nil},
		{name: "lifted then suspended again", given: []events.Data{issued, suspendedRun, events.APIKeyUnsuspended{KeyID: "key_2", AccountID: "acc_1"}},
			when: guard(700), then: []events.Data{events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendRunaway,
				SpentNanoUSD: 700, CeilingNanoUSD: 500, WindowSeconds: 300}}},
		{name: "runaway guard trips above the ceiling with the figures", given: []events.Data{issued}, when: guard(600),
			then: []events.Data{suspendedRun}},
		{name: "runaway guard at the ceiling does nothing", given: []events.Data{issued}, when: guard(500), then: nil},
		{name: "runaway guard on a suspended key does nothing", given: []events.Data{issued, suspendedRun}, when: guard(900), then: nil},
		{name: "runaway guard on a revoked key does nothing", given: []events.Data{issued, revoked}, when: guard(900), then: nil},
		{name: "runaway guard without a ceiling", given: []events.Data{issued}, err: commands.ErrInvalid, field: "ceiling",
			when: func(k commands.APIKey) ([]events.Data, error) {
				return commands.DecideRunawayGuard(k, commands.RunawayGuard{Spent: 1})
			}},
	})
}

func TestDecideCompletionReservation(t *testing.T) {
	req := commands.RequestCompletion{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: events.ModeAsync, Request: requested.Request}
	withRes := req
	r := reserved
	r.CompletionID, r.AccountID, r.KeyID = "", "", ""
	withRes.Reservation = &r
	succ := &events.CompletionSucceeded{Provider: "p", UpstreamModel: "u", Usage: events.Usage{PromptTokens: 10, CompletionTokens: 20}, CostNanoUSD: 40, Response: []byte(`{}`)}
	fail := &events.CompletionFailed{Status: 502, ErrorType: "upstream_error", ErrorMessage: "down"}
	run(t, "completion-chatcmpl-abc123", commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "request with a reservation records both in one decision",
			when: func(c commands.Completion) ([]events.Data, error) {
				return commands.DecideRequestCompletion(c, withRes)
			},
			then: []events.Data{requested, reserved}},
		{name: "request without one records only the request",
			when: func(c commands.Completion) ([]events.Data, error) { return commands.DecideRequestCompletion(c, req) },
			then: []events.Data{requested}},
		{name: "a negative reservation is refused", err: commands.ErrInvalid, field: "reservation",
			when: func(c commands.Completion) ([]events.Data, error) {
				bad := withRes
				b := r
				b.CostNanoUSD = -1
				bad.Reservation = &b
				return commands.DecideRequestCompletion(c, bad)
			}},
		{name: "success settles the real cost with the outcome", given: []events.Data{requested, reserved, started},
			when: func(c commands.Completion) ([]events.Data, error) {
				return commands.DecideFinishCompletion(c, commands.FinishCompletion{Executor: "worker:w1", Succeeded: succ})
			},
			then: []events.Data{
				events.CompletionSucceeded{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
					Provider: "p", UpstreamModel: "u", Usage: events.Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30}, CostNanoUSD: 40, Response: []byte(`{}`)},
				events.QuotaSettled{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", ReservedNanoUSD: 5000, CostNanoUSD: 40,
					ReservedTokens: 1200, Tokens: 30, Day: "2026-03-14", Month: "2026-03"},
			}},
		{name: "failure releases the whole reservation with the outcome", given: []events.Data{requested, reserved, started},
			when: func(c commands.Completion) ([]events.Data, error) {
				return commands.DecideFinishCompletion(c, commands.FinishCompletion{Executor: "worker:w1", Failed: fail})
			},
			then: []events.Data{
				events.CompletionFailed{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
					Status: 502, ErrorType: "upstream_error", ErrorMessage: "down"},
				events.QuotaReleased{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", ReservedNanoUSD: 5000,
					ReservedTokens: 1200, Reason: events.ReleaseFailed, Day: "2026-03-14", Month: "2026-03"},
			}},
	})
}
