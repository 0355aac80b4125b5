package account_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/account"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

func TestDecideCreateAccount(t *testing.T) {
	t.Parallel()
	create := func(c account.CreateAccount) func(account.Account) ([]events.Data, error) {
		return func(a account.Account) ([]events.Data, error) { return account.DecideCreateAccount(a, c, plans) }
	}
	ok := account.CreateAccount{AccountID: "acc_1", Name: "  Acme  ", Email: "ops@acme.example", Plan: "pro"}
	with := func(f func(*account.CreateAccount)) account.CreateAccount { c := ok; f(&c); return c }
	decidetest.Run(t, account.AccountStream("acc_1"), account.FoldAccount, []decidetest.Case[account.Account]{
		{Name: "new account, name trimmed", When: create(ok), Then: []events.Data{created}},
		{
			Name: "with stripe customer links it",
			When: create(with(func(c *account.CreateAccount) { c.StripeCustomerID = "cus_NffrFeUfNV2Hib" })),
			Then: []events.Data{created, events.BillingCustomerLinked{AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib"}},
		},
		{Name: "exists already", Given: []events.Data{created}, When: create(ok), Err: domainerr.ErrAlreadyExists},
		{Name: "empty name", When: create(with(func(c *account.CreateAccount) { c.Name = "   " })), Err: domainerr.ErrInvalid, Field: "name"},
		{Name: "long name", When: create(with(func(c *account.CreateAccount) { c.Name = strings.Repeat("a", 201) })), Err: domainerr.ErrInvalid, Field: "name"},
		{Name: "bad email", When: create(with(func(c *account.CreateAccount) { c.Email = "not an email" })), Err: domainerr.ErrInvalid, Field: "email"},
		{Name: "unknown plan", When: create(with(func(c *account.CreateAccount) { c.Plan = "platinum" })), Err: domainerr.ErrInvalid, Field: "plan"},
		{Name: "bad stripe customer", When: create(with(func(c *account.CreateAccount) { c.StripeCustomerID = "acct_1" })), Err: domainerr.ErrInvalid, Field: "stripe_customer_id"},
	})
}

func TestFoldAccount(t *testing.T) {
	t.Parallel()
	a, err := account.FoldAccount(decidetest.History(t, "account-acc_1", created, events.BillingCustomerLinked{AccountID: "acc_1", StripeCustomerID: "cus_X"}))
	if err != nil {
		t.Fatal(err)
	}
	want := account.Account{ID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro", StripeCustomerID: "cus_X", Version: 2}
	if a != want {
		t.Errorf("FoldAccount = %+v, want %+v", a, want)
	}
}

func TestDecideIssueAPIKey(t *testing.T) {
	t.Parallel()
	acct, err := account.FoldAccount(decidetest.History(t, "account-acc_1", created))
	if err != nil {
		t.Fatal(err)
	}
	ok := account.IssueAPIKey{KeyID: "key_2", AccountID: "acc_1", Name: " prod ", Hash: keyHash, Prefix: "tg_live_ab"}
	issue := func(a account.Account, c account.IssueAPIKey) func(account.APIKey) ([]events.Data, error) {
		return func(k account.APIKey) ([]events.Data, error) { return account.DecideIssueAPIKey(a, k, c) }
	}
	with := func(f func(*account.IssueAPIKey)) account.IssueAPIKey { c := ok; f(&c); return c }
	decidetest.Run(t, account.APIKeyStream("key_2"), account.FoldAPIKey, []decidetest.Case[account.APIKey]{
		{Name: "issued", When: issue(acct, ok), Then: []events.Data{issued}},
		{Name: "account missing", When: issue(account.Account{}, ok), Err: domainerr.ErrNotFound},
		{Name: "key exists", Given: []events.Data{issued}, When: issue(acct, ok), Err: domainerr.ErrAlreadyExists},
		{Name: "revoked key id is not reused", Given: []events.Data{issued, revoked}, When: issue(acct, ok), Err: domainerr.ErrAlreadyExists},
		{Name: "long name", When: issue(acct, with(func(c *account.IssueAPIKey) { c.Name = strings.Repeat("k", 201) })), Err: domainerr.ErrInvalid, Field: "name"},
		{Name: "short hash", When: issue(acct, with(func(c *account.IssueAPIKey) { c.Hash = "abc" })), Err: domainerr.ErrInvalid, Field: "key_hash"},
		{Name: "hash not hex", When: issue(acct, with(func(c *account.IssueAPIKey) { c.Hash = strings.Repeat("z", 64) })), Err: domainerr.ErrInvalid, Field: "key_hash"},
		{Name: "hash upper-case hex", When: issue(acct, with(func(c *account.IssueAPIKey) { c.Hash = strings.ToUpper(keyHash) })), Err: domainerr.ErrInvalid, Field: "key_hash"},
	})
}

func TestDecideRevokeAPIKey(t *testing.T) {
	t.Parallel()
	revoke := func(k account.APIKey) ([]events.Data, error) { return account.DecideRevokeAPIKey(k) }
	decidetest.Run(t, account.APIKeyStream("key_2"), account.FoldAPIKey, []decidetest.Case[account.APIKey]{
		{Name: "revoked", Given: []events.Data{issued}, When: revoke, Then: []events.Data{revoked}},
		{Name: "revoke twice appends nothing", Given: []events.Data{issued, revoked}, When: revoke, Then: nil},
		{Name: "unknown key", When: revoke, Err: domainerr.ErrNotFound},
	})
}

func TestFoldAPIKey(t *testing.T) {
	t.Parallel()
	k, err := account.FoldAPIKey(decidetest.History(t, "apikey-key_2", issued, revoked))
	if err != nil {
		t.Fatal(err)
	}
	want := account.APIKey{ID: "key_2", AccountID: "acc_1", Name: "prod", Hash: keyHash, Prefix: "tg_live_ab", Revoked: true, Version: 2}
	if k != want {
		t.Errorf("FoldAPIKey = %+v, want %+v", k, want)
	}
}

func TestDecideRequestCompletion(t *testing.T) {
	t.Parallel()
	ok := completion.RequestCompletion{
		CompletionID: requested.CompletionID, AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: events.ModeAsync, Request: requested.Request,
	}
	req := func(c completion.RequestCompletion) func(completion.Completion) ([]events.Data, error) {
		return func(s completion.Completion) ([]events.Data, error) { return completion.DecideRequestCompletion(s, c) }
	}
	with := func(f func(*completion.RequestCompletion)) completion.RequestCompletion { c := ok; f(&c); return c }
	syncReq := requested
	syncReq.Mode = events.ModeSync
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "async", When: req(ok), Then: []events.Data{requested}},
		{Name: "sync", When: req(with(func(c *completion.RequestCompletion) { c.Mode = events.ModeSync })), Then: []events.Data{syncReq}},
		{Name: "exists already", Given: []events.Data{requested}, When: req(ok), Err: domainerr.ErrAlreadyExists},
		{Name: "bad mode", When: req(with(func(c *completion.RequestCompletion) { c.Mode = "batch" })), Err: domainerr.ErrInvalid, Field: "mode"},
		{Name: "no model", When: req(with(func(c *completion.RequestCompletion) { c.Model = "" })), Err: domainerr.ErrInvalid, Field: "model"},
		{Name: "request not JSON", When: req(with(func(c *completion.RequestCompletion) { c.Request = json.RawMessage(`{"model":`) })), Err: domainerr.ErrInvalid, Field: "request"},
		{Name: "request missing", When: req(with(func(c *completion.RequestCompletion) { c.Request = nil })), Err: domainerr.ErrInvalid, Field: "request"},
	})
}

func TestDecideStartCompletion(t *testing.T) {
	t.Parallel()
	claim := func(executor string, lease time.Duration) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideStartCompletion(c, completion.StartCompletion{Executor: executor, Now: decidetest.T0, Lease: lease})
		}
	}
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "queued is claimed", Given: []events.Data{requested}, When: claim("worker:w1", time.Minute), Then: []events.Data{started}},
		{Name: "unknown completion", When: claim("worker:w1", time.Minute), Err: domainerr.ErrNotFound},
		{Name: "running", Given: []events.Data{requested, started}, When: claim("worker:w2", time.Minute), Err: domainerr.ErrAlreadyClaimed},
		{Name: "running, same executor", Given: []events.Data{requested, started}, When: claim("worker:w1", time.Minute), Err: domainerr.ErrAlreadyClaimed},
		{Name: "succeeded", Given: []events.Data{requested, started, succeeded}, When: claim("worker:w2", time.Minute), Err: domainerr.ErrAlreadyClaimed},
		{Name: "failed", Given: []events.Data{requested, started, failed}, When: claim("worker:w2", time.Minute), Err: domainerr.ErrAlreadyClaimed},
		{Name: "zero lease", Given: []events.Data{requested}, When: claim("worker:w1", 0), Err: domainerr.ErrInvalid, Field: "lease"},
		{Name: "negative lease", Given: []events.Data{requested}, When: claim("worker:w1", -time.Second), Err: domainerr.ErrInvalid, Field: "lease"},
		{Name: "no executor", Given: []events.Data{requested}, When: claim("", time.Minute), Err: domainerr.ErrInvalid, Field: "executor"},
	})
}

func TestDecideFinishCompletion(t *testing.T) {
	t.Parallel()
	finish := func(cmd completion.FinishCompletion) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) { return completion.DecideFinishCompletion(c, cmd) }
	}
	// The executor reports only what it knows; the decision fills in the
	// completion's identity and computes the total.
	report := events.CompletionSucceeded{
		Provider: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
		Usage:       events.Usage{PromptTokens: 9, CompletionTokens: 12, TotalTokens: 999},
		CostNanoUSD: 8550, LatencyMS: 412, Response: json.RawMessage(`{"id":"chatcmpl-abc123"}`),
	}
	negative := func(f func(*events.CompletionSucceeded)) *events.CompletionSucceeded { r := report; f(&r); return &r }
	failure := events.CompletionFailed{Status: 502, ErrorType: "server_error", ErrorMessage: "all providers failed", LatencyMS: 30012}
	running := []events.Data{requested, started}
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "succeeded, total computed", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), Then: []events.Data{succeeded}},
		{Name: "failed", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1", Failed: &failure}), Then: []events.Data{failed}},
		{Name: "by another executor", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w2", Succeeded: &report}), Err: domainerr.ErrAlreadyClaimed},
		{Name: "twice", Given: []events.Data{requested, started, succeeded}, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), Err: domainerr.ErrWrongState},
		{Name: "after failure", Given: []events.Data{requested, started, failed}, When: finish(completion.FinishCompletion{Executor: "worker:w1", Failed: &failure}), Err: domainerr.ErrWrongState},
		{Name: "queued, not claimed", Given: []events.Data{requested}, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), Err: domainerr.ErrWrongState},
		{Name: "unknown", When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), Err: domainerr.ErrWrongState},
		{Name: "negative prompt tokens", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: negative(func(s *events.CompletionSucceeded) { s.Usage.PromptTokens = -1 })}), Err: domainerr.ErrInvalid, Field: "usage"},
		{Name: "negative completion tokens", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: negative(func(s *events.CompletionSucceeded) { s.Usage.CompletionTokens = -5 })}), Err: domainerr.ErrInvalid, Field: "usage"},
		{Name: "negative cost", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: negative(func(s *events.CompletionSucceeded) { s.CostNanoUSD = -1 })}), Err: domainerr.ErrInvalid, Field: "usage"},
		{Name: "no outcome", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1"}), Err: domainerr.ErrInvalid, Field: "outcome"},
		{Name: "both outcomes", Given: running, When: finish(completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report, Failed: &failure}), Err: domainerr.ErrInvalid, Field: "outcome"},
	})
}

func TestFoldCompletion(t *testing.T) {
	t.Parallel()
	c, err := completion.FoldCompletion(decidetest.History(t, "completion-chatcmpl-abc123", requested, started, succeeded))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "chatcmpl-abc123" || c.AccountID != "acc_1" || c.KeyID != "key_2" || c.Model != "gpt-4o-mini" || c.Mode != events.ModeAsync {
		t.Errorf("identity = %+v", c)
	}
	if c.Status != completion.StatusSucceeded || !c.Finished() || c.Version != 3 {
		t.Errorf("status %q finished %v version %d, want succeeded true 3", c.Status, c.Finished(), c.Version)
	}
	if c.Executor != "worker:w1" || !c.LeaseExpiresAt.Equal(decidetest.T0.Add(time.Minute)) {
		t.Errorf("claim = %s until %s", c.Executor, c.LeaseExpiresAt)
	}
	if !c.RequestedAt.Equal(decidetest.T0) || !c.StartedAt.Equal(decidetest.T0.Add(time.Second)) || !c.FinishedAt.Equal(decidetest.T0.Add(2*time.Second)) {
		t.Errorf("times = %s %s %s", c.RequestedAt, c.StartedAt, c.FinishedAt)
	}
	if c.Succeeded == nil || c.Succeeded.Usage.TotalTokens != 21 || c.Failed != nil {
		t.Errorf("outcome = %+v / %+v", c.Succeeded, c.Failed)
	}
	if string(c.Request) != string(requested.Request) {
		t.Errorf("request = %s", c.Request)
	}
}
