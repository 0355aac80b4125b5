package completion_test

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/completion"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

func quotaI64(v int64) *int64 { return &v }

var (
	limits10     = events.LimitOverrides{RequestsPerMinute: quotaI64(10), DailyBudgetNanoUSD: quotaI64(1_000_000_000)}
	suspendedRun = events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendRunaway,
		SpentNanoUSD: 600, CeilingNanoUSD: 500, WindowSeconds: 300}
	reserved = events.QuotaReserved{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2",
		CostNanoUSD: 5000, Tokens: 1200, Day: "2026-03-14", Month: "2026-03", ExpiresAt: decidetest.T0.Add(15 * time.Minute)}
)

func TestDecideAccountQuota(t *testing.T) {
	t.Parallel()
	plan := func(p string) func(account.Account) ([]events.Data, error) {
		return func(a account.Account) ([]events.Data, error) {
			return account.DecideChangePlan(a, account.ChangePlan{Plan: p}, plans)
		}
	}
	lim := func(l events.LimitOverrides) func(account.Account) ([]events.Data, error) {
		return func(a account.Account) ([]events.Data, error) { return account.DecideChangeAccountLimits(a, l) }
	}
	decidetest.Run(t, "account-acc_1", account.FoldAccount, []decidetest.Case[account.Account]{
		{Name: "plan change", Given: []events.Data{created}, When: plan("free"),
			Then: []events.Data{events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "pro", Plan: "free"}}},
		{Name: "plan change to the same plan is a no-op", Given: []events.Data{created}, When: plan("pro"), Then: nil},
		{Name: "plan back and forth folds", Given: []events.Data{created, events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "pro", Plan: "free"}},
			When: plan("pro"), Then: []events.Data{events.AccountPlanChanged{AccountID: "acc_1", FromPlan: "free", Plan: "pro"}}},
		{Name: "unknown plan", Given: []events.Data{created}, When: plan("gold"), Err: domainerr.ErrInvalid, Field: "plan"},
		{Name: "plan of a missing account", When: plan("free"), Err: domainerr.ErrNotFound},
		{Name: "limits set", Given: []events.Data{created}, When: lim(limits10),
			Then: []events.Data{events.AccountLimitsChanged{AccountID: "acc_1", Limits: limits10}}},
		{Name: "same limits are a no-op", Given: []events.Data{created, events.AccountLimitsChanged{AccountID: "acc_1", Limits: limits10}},
			When: lim(events.LimitOverrides{RequestsPerMinute: quotaI64(10), DailyBudgetNanoUSD: quotaI64(1_000_000_000)}), Then: nil},
		{Name: "negative limit", Given: []events.Data{created}, When: lim(events.LimitOverrides{TokensPerMinute: quotaI64(-1)}),
			Err: domainerr.ErrInvalid, Field: "tokens_per_minute"},
		{Name: "limits of a missing account", When: lim(limits10), Err: domainerr.ErrNotFound},
	})
}

func TestDecideAPIKeyQuota(t *testing.T) {
	t.Parallel()
	guard := func(spent int64) func(account.APIKey) ([]events.Data, error) {
		return func(k account.APIKey) ([]events.Data, error) {
			return account.DecideRunawayGuard(k, account.RunawayGuard{Spent: spent, Ceiling: 500, WindowSeconds: 300})
		}
	}
	lim := func(k account.APIKey) ([]events.Data, error) { return account.DecideChangeAPIKeyLimits(k, limits10) }
	decidetest.Run(t, "apikey-key_2", account.FoldAPIKey, []decidetest.Case[account.APIKey]{
		{Name: "key limits set", Given: []events.Data{issued}, When: lim,
			Then: []events.Data{events.APIKeyLimitsChanged{KeyID: "key_2", AccountID: "acc_1", Limits: limits10}}},
		{Name: "limits of a revoked key", Given: []events.Data{issued, revoked}, When: lim, Err: domainerr.ErrRevoked},
		{Name: "limits of a missing key", When: lim, Err: domainerr.ErrNotFound},
		{Name: "operator suspends", Given: []events.Data{issued}, When: account.DecideSuspendAPIKey,
			Then: []events.Data{events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendOperator}}},
		{Name: "suspending a suspended key is a no-op", Given: []events.Data{issued, suspendedRun}, When: account.DecideSuspendAPIKey, Then: nil},
		{Name: "suspending a revoked key", Given: []events.Data{issued, revoked}, When: account.DecideSuspendAPIKey, Err: domainerr.ErrRevoked},
		{Name: "operator lifts a suspension", Given: []events.Data{issued, suspendedRun}, When: account.DecideUnsuspendAPIKey,
			Then: []events.Data{events.APIKeyUnsuspended{KeyID: "key_2", AccountID: "acc_1"}}},
		{Name: "lifting no suspension is a no-op", Given: []events.Data{issued}, When: account.DecideUnsuspendAPIKey, Then: nil},
		{Name: "lifted then suspended again", Given: []events.Data{issued, suspendedRun, events.APIKeyUnsuspended{KeyID: "key_2", AccountID: "acc_1"}},
			When: guard(700), Then: []events.Data{events.APIKeySuspended{KeyID: "key_2", AccountID: "acc_1", Reason: events.SuspendRunaway,
				SpentNanoUSD: 700, CeilingNanoUSD: 500, WindowSeconds: 300}}},
		{Name: "runaway guard trips above the ceiling with the figures", Given: []events.Data{issued}, When: guard(600),
			Then: []events.Data{suspendedRun}},
		{Name: "runaway guard at the ceiling does nothing", Given: []events.Data{issued}, When: guard(500), Then: nil},
		{Name: "runaway guard on a suspended key does nothing", Given: []events.Data{issued, suspendedRun}, When: guard(900), Then: nil},
		{Name: "runaway guard on a revoked key does nothing", Given: []events.Data{issued, revoked}, When: guard(900), Then: nil},
		{Name: "runaway guard without a ceiling", Given: []events.Data{issued}, Err: domainerr.ErrInvalid, Field: "ceiling",
			When: func(k account.APIKey) ([]events.Data, error) {
				return account.DecideRunawayGuard(k, account.RunawayGuard{Spent: 1})
			}},
	})
}

func TestDecideCompletionReservation(t *testing.T) {
	t.Parallel()
	req := completion.RequestCompletion{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: events.ModeAsync, Request: requested.Request}
	withRes := req
	r := reserved
	r.CompletionID, r.AccountID, r.KeyID = "", "", ""
	withRes.Reservation = &r
	succ := &events.CompletionSucceeded{Provider: "p", UpstreamModel: "u", Usage: events.Usage{PromptTokens: 10, CompletionTokens: 20}, CostNanoUSD: 40, Response: []byte(`{}`)}
	fail := &events.CompletionFailed{Status: 502, ErrorType: "upstream_error", ErrorMessage: "down"}
	decidetest.Run(t, "completion-chatcmpl-abc123", completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "request with a reservation records both in one decision",
			When: func(c completion.Completion) ([]events.Data, error) {
				return completion.DecideRequestCompletion(c, withRes)
			},
			Then: []events.Data{requested, reserved}},
		{Name: "request without one records only the request",
			When: func(c completion.Completion) ([]events.Data, error) {
				return completion.DecideRequestCompletion(c, req)
			},
			Then: []events.Data{requested}},
		{Name: "a negative reservation is refused", Err: domainerr.ErrInvalid, Field: "reservation",
			When: func(c completion.Completion) ([]events.Data, error) {
				bad := withRes
				b := r
				b.CostNanoUSD = -1
				bad.Reservation = &b
				return completion.DecideRequestCompletion(c, bad)
			}},
		{Name: "success settles the real cost with the outcome", Given: []events.Data{requested, reserved, started},
			When: func(c completion.Completion) ([]events.Data, error) {
				return completion.DecideFinishCompletion(c, completion.FinishCompletion{Executor: "worker:w1", Succeeded: succ})
			},
			Then: []events.Data{
				events.CompletionSucceeded{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
					Provider: "p", UpstreamModel: "u", Usage: events.Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30}, CostNanoUSD: 40, Response: []byte(`{}`)},
				events.QuotaSettled{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", ReservedNanoUSD: 5000, CostNanoUSD: 40,
					ReservedTokens: 1200, Tokens: 30, Day: "2026-03-14", Month: "2026-03"},
			}},
		{Name: "failure releases the whole reservation with the outcome", Given: []events.Data{requested, reserved, started},
			When: func(c completion.Completion) ([]events.Data, error) {
				return completion.DecideFinishCompletion(c, completion.FinishCompletion{Executor: "worker:w1", Failed: fail})
			},
			Then: []events.Data{
				events.CompletionFailed{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
					Status: 502, ErrorType: "upstream_error", ErrorMessage: "down"},
				events.QuotaReleased{CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", ReservedNanoUSD: 5000,
					ReservedTokens: 1200, Reason: events.ReleaseFailed, Day: "2026-03-14", Month: "2026-03"},
			}},
	})
}
