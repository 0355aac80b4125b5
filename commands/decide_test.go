package commands_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/schemas"
)

// The given/when/then harness: given events are folded into state through
// the aggregate's Fold function, the command is decided on that state, and
// the outcome is compared with the expected events or error. Every decided
// event is also checked against its JSON Schema.

type gwt[S any] struct {
	name  string
	given []events.Data
	when  func(S) ([]events.Data, error)
	then  []events.Data
	err   error  // matched with errors.Is
	field string // the *ValidationError's field, when err is ErrInvalid
}

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// history builds envelopes for given with increasing stream versions.
func history(t *testing.T, stream string, given ...events.Data) []events.Envelope {
	t.Helper()
	out := make([]events.Envelope, len(given))
	for i, d := range given {
		e, err := events.New(stream, d, events.Metadata{Actor: "test"}, t0.Add(time.Duration(i)*time.Second), "")
		if err != nil {
			t.Fatalf("events.New(%T): %v", d, err)
		}
		e.StreamVersion = int64(i + 1)
		out[i] = e
	}
	return out
}

var (
	validatorOnce sync.Once
	validator     *schemas.Validator
	validatorErr  error
)

func schemaValidator(t *testing.T) *schemas.Validator {
	t.Helper()
	validatorOnce.Do(func() { validator, validatorErr = schemas.NewValidator() })
	if validatorErr != nil {
		t.Fatalf("schemas.NewValidator: %v", validatorErr)
	}
	return validator
}

func run[S any](t *testing.T, stream string, fold func([]events.Envelope) (S, error), cases []gwt[S]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			state, err := fold(history(t, stream, tc.given...))
			if err != nil {
				t.Fatalf("fold given: %v", err)
			}
			got, err := tc.when(state)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				if got != nil {
					t.Errorf("events = %s alongside error, want none", dump(got))
				}
				if tc.field != "" {
					var ve *commands.ValidationError
					if !errors.As(err, &ve) {
						t.Fatalf("err = %T %v, want *commands.ValidationError", err, err)
					}
					if ve.Field != tc.field {
						t.Errorf("ValidationError.Field = %q, want %q (%v)", ve.Field, tc.field, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if g, w := dump(got), dump(tc.then); g != w {
				t.Errorf("then\n got %s\nwant %s", g, w)
			}
			v := schemaValidator(t)
			for _, d := range got {
				raw, err := json.Marshal(d)
				if err != nil {
					t.Fatal(err)
				}
				if err := v.Validate(d.EventType(), events.Types()[d.EventType()], nil, raw); err != nil {
					t.Errorf("decided event does not match its schema: %v", err)
				}
			}
		})
	}
}

// dump renders events as "type json" lines, so comparisons are exact and
// failures readable.
func dump(ds []events.Data) string {
	if len(ds) == 0 {
		return "[]"
	}
	var b strings.Builder
	for _, d := range ds {
		raw, err := json.Marshal(d)
		if err != nil {
			return fmt.Sprintf("marshal %T: %v", d, err)
		}
		fmt.Fprintf(&b, "\n  %s %s", d.EventType(), raw)
	}
	return b.String()
}

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
	started   = events.CompletionStarted{CompletionID: "chatcmpl-abc123", Executor: "worker:w1", LeaseExpiresAt: t0.Add(time.Minute)}
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

func TestDecideCreateAccount(t *testing.T) {
	create := func(c commands.CreateAccount) func(commands.Account) ([]events.Data, error) {
		return func(a commands.Account) ([]events.Data, error) { return commands.DecideCreateAccount(a, c, plans) }
	}
	ok := commands.CreateAccount{AccountID: "acc_1", Name: "  Acme  ", Email: "ops@acme.example", Plan: "pro"}
	with := func(f func(*commands.CreateAccount)) commands.CreateAccount { c := ok; f(&c); return c }
	run(t, commands.AccountStream("acc_1"), commands.FoldAccount, []gwt[commands.Account]{
		{name: "new account, name trimmed", when: create(ok), then: []events.Data{created}},
		{
			name: "with stripe customer links it",
			when: create(with(func(c *commands.CreateAccount) { c.StripeCustomerID = "cus_NffrFeUfNV2Hib" })),
			then: []events.Data{created, events.BillingCustomerLinked{AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib"}},
		},
		{name: "exists already", given: []events.Data{created}, when: create(ok), err: commands.ErrAlreadyExists},
		{name: "empty name", when: create(with(func(c *commands.CreateAccount) { c.Name = "   " })), err: commands.ErrInvalid, field: "name"},
		{name: "long name", when: create(with(func(c *commands.CreateAccount) { c.Name = strings.Repeat("a", 201) })), err: commands.ErrInvalid, field: "name"},
		{name: "bad email", when: create(with(func(c *commands.CreateAccount) { c.Email = "not an email" })), err: commands.ErrInvalid, field: "email"},
		{name: "unknown plan", when: create(with(func(c *commands.CreateAccount) { c.Plan = "platinum" })), err: commands.ErrInvalid, field: "plan"},
		{name: "bad stripe customer", when: create(with(func(c *commands.CreateAccount) { c.StripeCustomerID = "acct_1" })), err: commands.ErrInvalid, field: "stripe_customer_id"},
	})
}

func TestFoldAccount(t *testing.T) {
	a, err := commands.FoldAccount(history(t, "account-acc_1", created, events.BillingCustomerLinked{AccountID: "acc_1", StripeCustomerID: "cus_X"}))
	if err != nil {
		t.Fatal(err)
	}
	want := commands.Account{ID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro", StripeCustomerID: "cus_X", Version: 2}
	if a != want {
		t.Errorf("FoldAccount = %+v, want %+v", a, want)
	}
}

func TestDecideIssueAPIKey(t *testing.T) {
	account, err := commands.FoldAccount(history(t, "account-acc_1", created))
	if err != nil {
		t.Fatal(err)
	}
	ok := commands.IssueAPIKey{KeyID: "key_2", AccountID: "acc_1", Name: " prod ", Hash: keyHash, Prefix: "tg_live_ab"}
	issue := func(a commands.Account, c commands.IssueAPIKey) func(commands.APIKey) ([]events.Data, error) {
		return func(k commands.APIKey) ([]events.Data, error) { return commands.DecideIssueAPIKey(a, k, c) }
	}
	with := func(f func(*commands.IssueAPIKey)) commands.IssueAPIKey { c := ok; f(&c); return c }
	run(t, commands.APIKeyStream("key_2"), commands.FoldAPIKey, []gwt[commands.APIKey]{
		{name: "issued", when: issue(account, ok), then: []events.Data{issued}},
		{name: "account missing", when: issue(commands.Account{}, ok), err: commands.ErrNotFound},
		{name: "key exists", given: []events.Data{issued}, when: issue(account, ok), err: commands.ErrAlreadyExists},
		{name: "revoked key id is not reused", given: []events.Data{issued, revoked}, when: issue(account, ok), err: commands.ErrAlreadyExists},
		{name: "long name", when: issue(account, with(func(c *commands.IssueAPIKey) { c.Name = strings.Repeat("k", 201) })), err: commands.ErrInvalid, field: "name"},
		{name: "short hash", when: issue(account, with(func(c *commands.IssueAPIKey) { c.Hash = "abc" })), err: commands.ErrInvalid, field: "key_hash"},
		{name: "hash not hex", when: issue(account, with(func(c *commands.IssueAPIKey) { c.Hash = strings.Repeat("z", 64) })), err: commands.ErrInvalid, field: "key_hash"},
		{name: "hash upper-case hex", when: issue(account, with(func(c *commands.IssueAPIKey) { c.Hash = strings.ToUpper(keyHash) })), err: commands.ErrInvalid, field: "key_hash"},
	})
}

func TestDecideRevokeAPIKey(t *testing.T) {
	revoke := func(k commands.APIKey) ([]events.Data, error) { return commands.DecideRevokeAPIKey(k) }
	run(t, commands.APIKeyStream("key_2"), commands.FoldAPIKey, []gwt[commands.APIKey]{
		{name: "revoked", given: []events.Data{issued}, when: revoke, then: []events.Data{revoked}},
		{name: "revoke twice appends nothing", given: []events.Data{issued, revoked}, when: revoke, then: nil},
		{name: "unknown key", when: revoke, err: commands.ErrNotFound},
	})
}

func TestFoldAPIKey(t *testing.T) {
	k, err := commands.FoldAPIKey(history(t, "apikey-key_2", issued, revoked))
	if err != nil {
		t.Fatal(err)
	}
	want := commands.APIKey{ID: "key_2", AccountID: "acc_1", Name: "prod", Hash: keyHash, Prefix: "tg_live_ab", Revoked: true, Version: 2}
	if k != want {
		t.Errorf("FoldAPIKey = %+v, want %+v", k, want)
	}
}

func TestDecideRequestCompletion(t *testing.T) {
	ok := commands.RequestCompletion{
		CompletionID: requested.CompletionID, AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: events.ModeAsync, Request: requested.Request,
	}
	req := func(c commands.RequestCompletion) func(commands.Completion) ([]events.Data, error) {
		return func(s commands.Completion) ([]events.Data, error) { return commands.DecideRequestCompletion(s, c) }
	}
	with := func(f func(*commands.RequestCompletion)) commands.RequestCompletion { c := ok; f(&c); return c }
	syncReq := requested
	syncReq.Mode = events.ModeSync
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "async", when: req(ok), then: []events.Data{requested}},
		{name: "sync", when: req(with(func(c *commands.RequestCompletion) { c.Mode = events.ModeSync })), then: []events.Data{syncReq}},
		{name: "exists already", given: []events.Data{requested}, when: req(ok), err: commands.ErrAlreadyExists},
		{name: "bad mode", when: req(with(func(c *commands.RequestCompletion) { c.Mode = "batch" })), err: commands.ErrInvalid, field: "mode"},
		{name: "no model", when: req(with(func(c *commands.RequestCompletion) { c.Model = "" })), err: commands.ErrInvalid, field: "model"},
		{name: "request not JSON", when: req(with(func(c *commands.RequestCompletion) { c.Request = json.RawMessage(`{"model":`) })), err: commands.ErrInvalid, field: "request"},
		{name: "request missing", when: req(with(func(c *commands.RequestCompletion) { c.Request = nil })), err: commands.ErrInvalid, field: "request"},
	})
}

func TestDecideStartCompletion(t *testing.T) {
	claim := func(executor string, lease time.Duration) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideStartCompletion(c, commands.StartCompletion{Executor: executor, Now: t0, Lease: lease})
		}
	}
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "queued is claimed", given: []events.Data{requested}, when: claim("worker:w1", time.Minute), then: []events.Data{started}},
		{name: "unknown completion", when: claim("worker:w1", time.Minute), err: commands.ErrNotFound},
		{name: "running", given: []events.Data{requested, started}, when: claim("worker:w2", time.Minute), err: commands.ErrAlreadyClaimed},
		{name: "running, same executor", given: []events.Data{requested, started}, when: claim("worker:w1", time.Minute), err: commands.ErrAlreadyClaimed},
		{name: "succeeded", given: []events.Data{requested, started, succeeded}, when: claim("worker:w2", time.Minute), err: commands.ErrAlreadyClaimed},
		{name: "failed", given: []events.Data{requested, started, failed}, when: claim("worker:w2", time.Minute), err: commands.ErrAlreadyClaimed},
		{name: "zero lease", given: []events.Data{requested}, when: claim("worker:w1", 0), err: commands.ErrInvalid, field: "lease"},
		{name: "negative lease", given: []events.Data{requested}, when: claim("worker:w1", -time.Second), err: commands.ErrInvalid, field: "lease"},
		{name: "no executor", given: []events.Data{requested}, when: claim("", time.Minute), err: commands.ErrInvalid, field: "executor"},
	})
}

func TestDecideFinishCompletion(t *testing.T) {
	finish := func(cmd commands.FinishCompletion) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) { return commands.DecideFinishCompletion(c, cmd) }
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
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "succeeded, total computed", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), then: []events.Data{succeeded}},
		{name: "failed", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1", Failed: &failure}), then: []events.Data{failed}},
		{name: "by another executor", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w2", Succeeded: &report}), err: commands.ErrAlreadyClaimed},
		{name: "twice", given: []events.Data{requested, started, succeeded}, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), err: commands.ErrWrongState},
		{name: "after failure", given: []events.Data{requested, started, failed}, when: finish(commands.FinishCompletion{Executor: "worker:w1", Failed: &failure}), err: commands.ErrWrongState},
		{name: "queued, not claimed", given: []events.Data{requested}, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), err: commands.ErrWrongState},
		{name: "unknown", when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: &report}), err: commands.ErrWrongState},
		{name: "negative prompt tokens", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: negative(func(s *events.CompletionSucceeded) { s.Usage.PromptTokens = -1 })}), err: commands.ErrInvalid, field: "usage"},
		{name: "negative completion tokens", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: negative(func(s *events.CompletionSucceeded) { s.Usage.CompletionTokens = -5 })}), err: commands.ErrInvalid, field: "usage"},
		{name: "negative cost", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: negative(func(s *events.CompletionSucceeded) { s.CostNanoUSD = -1 })}), err: commands.ErrInvalid, field: "usage"},
		{name: "no outcome", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1"}), err: commands.ErrInvalid, field: "outcome"},
		{name: "both outcomes", given: running, when: finish(commands.FinishCompletion{Executor: "worker:w1", Succeeded: &report, Failed: &failure}), err: commands.ErrInvalid, field: "outcome"},
	})
}

func TestFoldCompletion(t *testing.T) {
	c, err := commands.FoldCompletion(history(t, "completion-chatcmpl-abc123", requested, started, succeeded))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "chatcmpl-abc123" || c.AccountID != "acc_1" || c.KeyID != "key_2" || c.Model != "gpt-4o-mini" || c.Mode != events.ModeAsync {
		t.Errorf("identity = %+v", c)
	}
	if c.Status != commands.StatusSucceeded || !c.Finished() || c.Version != 3 {
		t.Errorf("status %q finished %v version %d, want succeeded true 3", c.Status, c.Finished(), c.Version)
	}
	if c.Executor != "worker:w1" || !c.LeaseExpiresAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("claim = %s until %s", c.Executor, c.LeaseExpiresAt)
	}
	if !c.RequestedAt.Equal(t0) || !c.StartedAt.Equal(t0.Add(time.Second)) || !c.FinishedAt.Equal(t0.Add(2*time.Second)) {
		t.Errorf("times = %s %s %s", c.RequestedAt, c.StartedAt, c.FinishedAt)
	}
	if c.Succeeded == nil || c.Succeeded.Usage.TotalTokens != 21 || c.Failed != nil {
		t.Errorf("outcome = %+v / %+v", c.Succeeded, c.Failed)
	}
	if string(c.Request) != string(requested.Request) {
		t.Errorf("request = %s", c.Request)
	}
}
