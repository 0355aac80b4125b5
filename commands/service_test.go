package commands_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

func newService(t *testing.T) (*commands.Service, *pgstore.Store) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil, keyindex.Projection{})
	if err != nil {
		t.Fatal(err)
	}
	return commands.NewService(store, plans, func() time.Time { return decidetest.T0 }), store
}

func types(evs []events.Envelope) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%d:%s", e.StreamVersion, e.Type)
	}
	return out
}

func TestServiceAccountAndKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, store := newService(t)
	md := events.Metadata{Actor: "admin", CorrelationID: "req_1"}

	a, err := svc.CreateAccount(ctx, md, account.CreateAccount{AccountID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro", StripeCustomerID: "cus_X"})
	if err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	want := account.Account{ID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro", StripeCustomerID: "cus_X", Version: 2}
	if a != want {
		t.Errorf("CreateAccount = %+v, want %+v", a, want)
	}
	// A retried create is refused and appends nothing.
	if _, err := svc.CreateAccount(ctx, md, account.CreateAccount{AccountID: "acc_1", Name: "Acme", Plan: "pro"}); !errors.Is(err, domainerr.ErrAlreadyExists) {
		t.Errorf("second CreateAccount: err = %v, want domainerr.ErrAlreadyExists", err)
	}
	evs, err := store.Load(ctx, account.AccountStream("acc_1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(types(evs)); got != "[1:account.created 2:billing.customer_linked]" {
		t.Errorf("account stream = %s", got)
	}
	for _, e := range evs {
		if e.Metadata != (events.Metadata{AccountID: "acc_1", Actor: "admin", CorrelationID: "req_1"}) {
			t.Errorf("%s metadata = %+v", e.Type, e.Metadata)
		}
	}
	if got, err := svc.Account(ctx, "acc_1"); err != nil || got != want {
		t.Errorf("Account = %+v, %v", got, err)
	}
	if _, err := svc.Account(ctx, "acc_nope"); !errors.Is(err, domainerr.ErrNotFound) {
		t.Errorf("Account(unknown): err = %v, want domainerr.ErrNotFound", err)
	}

	// Keys.
	if _, err := svc.IssueAPIKey(ctx, md, account.IssueAPIKey{KeyID: "key_9", AccountID: "acc_nope", Hash: keyHash, Prefix: "tg"}); !errors.Is(err, domainerr.ErrNotFound) {
		t.Errorf("IssueAPIKey for unknown account: err = %v, want domainerr.ErrNotFound", err)
	}
	k, err := svc.IssueAPIKey(ctx, md, account.IssueAPIKey{KeyID: "key_2", AccountID: "acc_1", Name: "prod", Hash: keyHash, Prefix: "tg_live_ab"})
	if err != nil {
		t.Fatalf("IssueAPIKey: %v", err)
	}
	wantKey := account.APIKey{ID: "key_2", AccountID: "acc_1", Name: "prod", Hash: keyHash, Prefix: "tg_live_ab", Version: 1}
	if k != wantKey {
		t.Errorf("IssueAPIKey = %+v, want %+v", k, wantKey)
	}
	if _, err := svc.IssueAPIKey(ctx, md, account.IssueAPIKey{KeyID: "key_2", AccountID: "acc_1", Hash: keyHash, Prefix: "tg"}); !errors.Is(err, domainerr.ErrAlreadyExists) {
		t.Errorf("IssueAPIKey again: err = %v, want domainerr.ErrAlreadyExists", err)
	}
	if id, err := keyindex.New(store.Pool()).FindAPIKey(ctx, keyHash); err != nil || id != "key_2" {
		t.Errorf("FindAPIKey = %q, %v", id, err)
	}

	for i := range 2 { // the second revoke is a no-op
		k, err = svc.RevokeAPIKey(ctx, events.Metadata{Actor: "admin"}, "key_2")
		if err != nil {
			t.Fatalf("RevokeAPIKey #%d: %v", i+1, err)
		}
		if !k.Revoked || k.Version != 2 {
			t.Errorf("RevokeAPIKey #%d = %+v, want revoked at version 2", i+1, k)
		}
	}
	evs, err = store.Load(ctx, account.APIKeyStream("key_2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(types(evs)); got != "[1:apikey.issued 2:apikey.revoked]" {
		t.Errorf("key stream = %s", got)
	}
	if evs[1].Metadata.AccountID != "acc_1" {
		t.Errorf("revoked metadata = %+v, want account acc_1", evs[1].Metadata)
	}
	if _, err := svc.RevokeAPIKey(ctx, md, "key_nope"); !errors.Is(err, domainerr.ErrNotFound) {
		t.Errorf("RevokeAPIKey(unknown): err = %v, want domainerr.ErrNotFound", err)
	}
	if _, err := svc.APIKey(ctx, "key_nope"); !errors.Is(err, domainerr.ErrNotFound) {
		t.Errorf("APIKey(unknown): err = %v, want domainerr.ErrNotFound", err)
	}
}

func requestCmd(id string, mode string) completion.RequestCompletion {
	return completion.RequestCompletion{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Mode: mode, Request: requested.Request,
	}
}

func TestServiceRequestWithClaimIsOneAppend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, store := newService(t)
	claim := &completion.StartCompletion{Executor: "api:i1", Now: decidetest.T0, Lease: time.Minute}
	c, err := svc.RequestCompletion(ctx, events.Metadata{Actor: "key:key_2"}, requestCmd("chatcmpl-sync1", events.ModeSync), claim)
	if err != nil {
		t.Fatalf("RequestCompletion: %v", err)
	}
	if c.Status != completion.StatusRunning || c.Executor != "api:i1" || c.Version != 2 || !c.LeaseExpiresAt.Equal(decidetest.T0.Add(time.Minute)) {
		t.Errorf("completion = %+v, want running by api:i1 at version 2", c)
	}
	evs, err := store.Load(ctx, completion.CompletionStream("chatcmpl-sync1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(types(evs)); got != "[1:completion.requested 2:completion.started]" {
		t.Fatalf("stream = %s", got)
	}
	// One append is one transaction: both events share it.
	c1, err := store.CursorAt(ctx, evs[0].Position)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := store.CursorAt(ctx, evs[1].Position)
	if err != nil {
		t.Fatal(err)
	}
	if c1.TransactionID != c2.TransactionID {
		t.Errorf("requested and started in transactions %d and %d, want one", c1.TransactionID, c2.TransactionID)
	}
	// The claimed completion cannot be claimed again.
	if _, err := svc.StartCompletion(ctx, events.Metadata{}, "chatcmpl-sync1", completion.StartCompletion{Executor: "worker:w1", Now: decidetest.T0, Lease: time.Minute}); !errors.Is(err, domainerr.ErrAlreadyClaimed) {
		t.Errorf("StartCompletion on a running completion: err = %v, want domainerr.ErrAlreadyClaimed", err)
	}
	// A retry of the same request by the same instance appends nothing.
	again, err := svc.RequestCompletion(ctx, events.Metadata{Actor: "key:key_2"}, requestCmd("chatcmpl-sync1", events.ModeSync), claim)
	if err != nil {
		t.Fatalf("retried RequestCompletion: %v", err)
	}
	if again.Version != 2 || again.Status != completion.StatusRunning {
		t.Errorf("retried completion.RequestCompletion = %+v", again)
	}
	if v, err := store.Version(ctx, completion.CompletionStream("chatcmpl-sync1")); err != nil || v != 2 {
		t.Errorf("version after retry = %d, %v; want 2", v, err)
	}
	// A bad claim rejects the whole request.
	if _, err := svc.RequestCompletion(ctx, events.Metadata{}, requestCmd("chatcmpl-sync2", events.ModeSync), &completion.StartCompletion{Executor: "api:i1", Now: decidetest.T0}); !errors.Is(err, domainerr.ErrInvalid) {
		t.Errorf("RequestCompletion with zero lease: err = %v, want domainerr.ErrInvalid", err)
	}
	if v, _ := store.Version(ctx, completion.CompletionStream("chatcmpl-sync2")); v != 0 {
		t.Errorf("rejected request left version %d", v)
	}
}

func TestServiceCompletionLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, store := newService(t)
	id := "chatcmpl-async1"
	c, err := svc.RequestCompletion(ctx, events.Metadata{}, requestCmd(id, events.ModeAsync), nil)
	if err != nil {
		t.Fatalf("RequestCompletion: %v", err)
	}
	if c.Status != completion.StatusQueued || c.Version != 1 {
		t.Errorf("requested = %+v", c)
	}
	if _, err := svc.FinishCompletion(ctx, events.Metadata{}, id, completion.FinishCompletion{Executor: "worker:w1", Succeeded: &succeeded}); !errors.Is(err, domainerr.ErrWrongState) {
		t.Errorf("finish before claim: err = %v, want domainerr.ErrWrongState", err)
	}
	if _, err := svc.StartCompletion(ctx, events.Metadata{}, id, completion.StartCompletion{Executor: "worker:w1", Now: decidetest.T0, Lease: time.Minute}); err != nil {
		t.Fatalf("StartCompletion: %v", err)
	}
	if _, err := svc.FinishCompletion(ctx, events.Metadata{}, id, completion.FinishCompletion{Executor: "worker:w2", Succeeded: &succeeded}); !errors.Is(err, domainerr.ErrAlreadyClaimed) {
		t.Errorf("finish by another executor: err = %v, want domainerr.ErrAlreadyClaimed", err)
	}
	report := succeeded
	report.Usage.TotalTokens = 0
	c, err = svc.FinishCompletion(ctx, events.Metadata{}, id, completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report})
	if err != nil {
		t.Fatalf("FinishCompletion: %v", err)
	}
	if c.Status != completion.StatusSucceeded || c.Version != 3 || c.Succeeded == nil || c.Succeeded.Usage.TotalTokens != 21 || c.Succeeded.CompletionID != id {
		t.Errorf("finished = %+v / %+v", c, c.Succeeded)
	}
	if _, err := svc.FinishCompletion(ctx, events.Metadata{}, id, completion.FinishCompletion{Executor: "worker:w1", Succeeded: &report}); !errors.Is(err, domainerr.ErrWrongState) {
		t.Errorf("finish twice: err = %v, want domainerr.ErrWrongState", err)
	}
	got, err := svc.Completion(ctx, id)
	if err != nil || got.Status != completion.StatusSucceeded || got.Version != 3 {
		t.Errorf("Completion = %+v, %v", got, err)
	}
	if _, err := svc.Completion(ctx, "chatcmpl-nope"); !errors.Is(err, domainerr.ErrNotFound) {
		t.Errorf("Completion(unknown): err = %v, want domainerr.ErrNotFound", err)
	}
	evs, _ := store.Load(ctx, completion.CompletionStream(id))
	if got := fmt.Sprint(types(evs)); got != "[1:completion.requested 2:completion.started 3:completion.succeeded]" {
		t.Errorf("stream = %s", got)
	}
}

func TestServiceStartCompletionRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, store := newService(t)
	id := "chatcmpl-race1"
	if _, err := svc.RequestCompletion(ctx, events.Metadata{}, requestCmd(id, events.ModeAsync), nil); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		errs    = make([]error, n)
		results = make([]completion.Completion, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = svc.StartCompletion(ctx, events.Metadata{Actor: "worker"}, id,
				completion.StartCompletion{Executor: fmt.Sprintf("worker:w%d", i), Now: decidetest.T0, Lease: time.Minute})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("executors %d and %d both claimed the completion", winner, i)
			}
			winner = i
		case !errors.Is(err, domainerr.ErrAlreadyClaimed):
			t.Errorf("executor %d: err = %v, want nil or domainerr.ErrAlreadyClaimed", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no executor claimed the completion")
	}
	if r := results[winner]; r.Executor != fmt.Sprintf("worker:w%d", winner) || r.Status != completion.StatusRunning || r.Version != 2 {
		t.Errorf("winner's completion = %+v", r)
	}
	evs, err := store.Load(ctx, completion.CompletionStream(id))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(types(evs)); got != "[1:completion.requested 2:completion.started]" {
		t.Fatalf("stream = %s, want exactly one completion.started", got)
	}
	d, err := events.Decode(evs[1])
	if err != nil {
		t.Fatal(err)
	}
	if s := d.(events.CompletionStarted); s.Executor != fmt.Sprintf("worker:w%d", winner) {
		t.Errorf("stored claim by %s, winner was worker:w%d", s.Executor, winner)
	}
}
