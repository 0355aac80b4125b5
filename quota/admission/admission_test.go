package admission_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/admission"
	"github.com/tollgate/tollgate/quota/memory"
)

// noCompletions is an event log without completions.
type noCompletions struct{}

func (noCompletions) Completion(context.Context, string) (completion.Completion, error) {
	return completion.Completion{}, domainerr.ErrNotFound
}

// Admission reserves the worst case, refuses a suspended key and a
// request over a budget with typed errors, and releases what was never
// recorded.
func TestAdmitRefuseRelease(t *testing.T) {
	ctx := context.Background()
	cfg := llmtest.Config(t, "http://127.0.0.1:1", "1000", "2000", "")
	model, _ := cfg.Model("m")
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	lim := memory.New(nil)
	a := admission.New(admission.Config{Config: cfg, Service: noCompletions{}, Limiter: lim, Now: func() time.Time { return now }})
	body := []byte(`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	p := admission.Principal{AccountID: "acc_1", KeyID: "key_1", Plan: "free"}

	adm, err := a.Admit(ctx, p, model, "c1", body)
	if err != nil || !adm.Decision.Allowed || adm.Reservation == nil || adm.Reservation.CostNanoUSD != int64(adm.Admission.Cost) ||
		adm.Admission.Tokens <= 10 || adm.Reservation.Day != "2026-03-14" {
		t.Fatalf("admit: %+v, %v", adm, err)
	}
	used := func() quota.Budget {
		t.Helper()
		u, err := lim.Peek(ctx, "acc_1", "key_1", now)
		if err != nil {
			t.Fatal(err)
		}
		return u.Account.Day
	}
	if b := used(); b.Reserved != adm.Admission.Cost {
		t.Fatalf("reserved %+v, want %d", b, adm.Admission.Cost)
	}
	a.Release(ctx, adm)
	if b := used(); b.Reserved != 0 || b.Spent != 0 {
		t.Fatalf("after the release: %+v", b)
	}

	suspended := p
	suspended.Suspended = &events.APIKeySuspended{KeyID: "key_1", AccountID: "acc_1", Reason: events.SuspendOperator}
	var se *admission.SuspendedError
	if _, err := a.Admit(ctx, suspended, model, "c2", body); !errors.As(err, &se) {
		t.Errorf("suspended key: err = %v", err)
	}

	budget := int64(adm.Admission.Cost) - 1
	poor := p
	poor.Account = events.LimitOverrides{DailyBudgetNanoUSD: &budget}
	var re *admission.RefusedError
	if _, err := a.Admit(ctx, poor, model, "c3", body); !errors.As(err, &re) || re.Decision.Reason != quota.AccountDailyBudget {
		t.Errorf("over the budget: err = %v", err)
	}
	if err := a.Check(ctx, poor); err != nil {
		t.Errorf("check of a minimal request under the budget: %v", err)
	}
	var ie *admission.InvalidError
	if _, err := a.Admit(ctx, p, model, "c4", []byte(`{"model":"m","messages":"hi"}`)); !errors.As(err, &ie) {
		t.Errorf("unreadable messages: err = %v", err)
	}
}
