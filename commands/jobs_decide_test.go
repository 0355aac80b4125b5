package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
)

var (
	withCallback = events.CompletionRequested{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini", Mode: events.ModeAsync,
		Request: json.RawMessage(`{"callback_url":"https://hooks.acme.example/cb","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
	}
	abandoned = events.CompletionAbandoned{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: t0.Add(time.Minute), Reason: "lease_expired",
	}
	cbDelivered = events.CompletionCallbackDelivered{CompletionID: "chatcmpl-abc123", URL: "https://hooks.acme.example/cb", Status: 204, Attempts: 2}
	cbFailed    = events.CompletionCallbackFailed{CompletionID: "chatcmpl-abc123", URL: "https://hooks.acme.example/cb", Status: 503, Attempts: 5, Error: "receiver answered 503"}
)

func TestDecideAbandonCompletion(t *testing.T) {
	abandon := func(now time.Time, reason string) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) {
			return commands.DecideAbandonCompletion(c, commands.AbandonCompletion{Now: now, Reason: reason})
		}
	}
	expiry := started.LeaseExpiresAt
	custom := abandoned
	custom.Reason = "executor_lost"
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "running, lease expired", given: []events.Data{requested, started}, when: abandon(expiry.Add(time.Second), ""), then: []events.Data{abandoned}},
		{name: "running, lease ends now", given: []events.Data{requested, started}, when: abandon(expiry, ""), then: []events.Data{abandoned}},
		{name: "reason kept", given: []events.Data{requested, started}, when: abandon(expiry.Add(time.Hour), "executor_lost"), then: []events.Data{custom}},
		{name: "running, lease still valid", given: []events.Data{requested, started}, when: abandon(expiry.Add(-time.Nanosecond), ""), err: commands.ErrWrongState},
		{name: "queued", given: []events.Data{requested}, when: abandon(expiry.Add(time.Hour), ""), err: commands.ErrWrongState},
		{name: "succeeded", given: []events.Data{requested, started, succeeded}, when: abandon(expiry.Add(time.Hour), ""), err: commands.ErrWrongState},
		{name: "failed", given: []events.Data{requested, started, failed}, when: abandon(expiry.Add(time.Hour), ""), err: commands.ErrWrongState},
		{name: "abandoned already", given: []events.Data{requested, started, abandoned}, when: abandon(expiry.Add(time.Hour), ""), err: commands.ErrWrongState},
		{name: "unknown", when: abandon(expiry, ""), err: commands.ErrNotFound},
		{name: "its reservation is released with it", given: []events.Data{requested, reserved, started}, when: abandon(expiry.Add(time.Second), ""),
			then: []events.Data{abandoned, events.QuotaReleased{CompletionID: reserved.CompletionID, AccountID: reserved.AccountID, KeyID: reserved.KeyID,
				ReservedNanoUSD: reserved.CostNanoUSD, ReservedTokens: reserved.Tokens, Reason: events.ReleaseAbandoned, Day: reserved.Day, Month: reserved.Month}}},
	})
}

func TestDecideRecordCallback(t *testing.T) {
	record := func(cmd commands.RecordCallback) func(commands.Completion) ([]events.Data, error) {
		return func(c commands.Completion) ([]events.Data, error) { return commands.DecideRecordCallback(c, cmd) }
	}
	// The dispatcher reports what happened; the decision names the
	// completion and its URL from the state.
	ok := &events.CompletionCallbackDelivered{Status: 204, Attempts: 2}
	bad := &events.CompletionCallbackFailed{Status: 503, Attempts: 5, Error: "receiver answered 503"}
	abandonedFailed := cbFailed
	done := []events.Data{withCallback, started, succeeded}
	run(t, commands.CompletionStream(requested.CompletionID), commands.FoldCompletion, []gwt[commands.Completion]{
		{name: "delivered", given: done, when: record(commands.RecordCallback{Delivered: ok}), then: []events.Data{cbDelivered}},
		{name: "failed", given: done, when: record(commands.RecordCallback{Failed: bad}), then: []events.Data{cbFailed}},
		{name: "after a failed completion", given: []events.Data{withCallback, started, failed}, when: record(commands.RecordCallback{Delivered: ok}), then: []events.Data{cbDelivered}},
		{name: "after abandonment", given: []events.Data{withCallback, started, abandoned}, when: record(commands.RecordCallback{Failed: bad}), then: []events.Data{abandonedFailed}},
		{name: "second outcome", given: append(done, cbDelivered), when: record(commands.RecordCallback{Delivered: ok}), err: commands.ErrAlreadyExists},
		{name: "outcome after failure", given: append(done, cbFailed), when: record(commands.RecordCallback{Delivered: ok}), err: commands.ErrAlreadyExists},
		{name: "still running", given: []events.Data{withCallback, started}, when: record(commands.RecordCallback{Delivered: ok}), err: commands.ErrWrongState},
		{name: "no callback", given: []events.Data{requested, started, succeeded}, when: record(commands.RecordCallback{Delivered: ok}), err: commands.ErrWrongState},
		{name: "unknown", when: record(commands.RecordCallback{Delivered: ok}), err: commands.ErrNotFound},
		{name: "non-2xx delivery", given: done, when: record(commands.RecordCallback{Delivered: &events.CompletionCallbackDelivered{Status: 500, Attempts: 1}}), err: commands.ErrInvalid, field: "status"},
		{name: "no attempts", given: done, when: record(commands.RecordCallback{Failed: &events.CompletionCallbackFailed{Attempts: 0}}), err: commands.ErrInvalid, field: "attempts"},
		{name: "no outcome", given: done, when: record(commands.RecordCallback{}), err: commands.ErrInvalid, field: "outcome"},
		{name: "both outcomes", given: done, when: record(commands.RecordCallback{Delivered: ok, Failed: bad}), err: commands.ErrInvalid, field: "outcome"},
	})
}

func TestFoldAbandonedAndCallback(t *testing.T) {
	c, err := commands.FoldCompletion(history(t, "completion-chatcmpl-abc123", withCallback, started, abandoned, cbFailed))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != commands.StatusAbandoned || !c.Finished() || c.Abandoned == nil || c.Succeeded != nil || c.Version != 4 {
		t.Errorf("status %q finished %v abandoned %+v version %d", c.Status, c.Finished(), c.Abandoned, c.Version)
	}
	if !c.FinishedAt.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("finished at %s", c.FinishedAt)
	}
	if c.CallbackURL != "https://hooks.acme.example/cb" || c.CallbackFailed == nil || c.CallbackDelivered != nil {
		t.Errorf("callback %q delivered %+v failed %+v", c.CallbackURL, c.CallbackDelivered, c.CallbackFailed)
	}
	// The provider gets the request without the callback field.
	if got, want := string(c.Request), `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`; got != want {
		t.Errorf("request = %s, want %s", got, want)
	}
}

func TestSplitCallbackURL(t *testing.T) {
	for _, tc := range []struct{ name, in, out, url string }{
		{"absent", `{"model":"m","messages":[]}`, `{"model":"m","messages":[]}`, ""},
		{"first", `{"callback_url":"https://a.example/x","model":"m"}`, `{"model":"m"}`, "https://a.example/x"},
		{"middle", `{"model":"m", "callback_url": "https://a.example/x" ,"n":1}`, `{"model":"m" ,"n":1}`, "https://a.example/x"},
		{"last", "{\n  \"model\": \"m\",\n  \"callback_url\": \"https://a.example/x\"\n}", "{\n  \"model\": \"m\"\n}", "https://a.example/x"},
		{"only", `{ "callback_url":"http://h/"}`, `{}`, "http://h/"},
		{"nested is kept", `{"model":"m","metadata":{"callback_url":"x"}}`, `{"model":"m","metadata":{"callback_url":"x"}}`, ""},
		{"in a string is kept", `{"model":"m","messages":[{"role":"user","content":"\"callback_url\""}]}`, `{"model":"m","messages":[{"role":"user","content":"\"callback_url\""}]}`, ""},
		{"not a string is removed", `{"callback_url":7,"model":"m"}`, `{"model":"m"}`, ""},
		{"duplicate, last wins", `{"callback_url":"http://a/","model":"m","callback_url":"http://b/"}`, `{"model":"m"}`, "http://b/"},
		{"not an object", `["callback_url"]`, `["callback_url"]`, ""},
		{"broken JSON", `{"callback_url":`, `{"callback_url":`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, url := commands.SplitCallbackURL(json.RawMessage(tc.in))
			if string(out) != tc.out || url != tc.url {
				t.Errorf("SplitCallbackURL(%s) = %s, %q; want %s, %q", tc.in, out, url, tc.out, tc.url)
			}
			if tc.name != "broken JSON" && !json.Valid(out) {
				t.Errorf("result is not JSON: %s", out)
			}
		})
	}
}

func TestValidateCallbackURL(t *testing.T) {
	for _, ok := range []string{"https://hooks.acme.example/tollgate", "http://127.0.0.1:8080/cb?x=1", "https://[::1]:443/"} {
		if err := commands.ValidateCallbackURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	long := "https://a.example/" + string(make([]byte, 2048))
	for _, bad := range []string{"", "ftp://a.example/", "file:///etc/passwd", "javascript:alert(1)", "//a.example/x", "https://", "https://user:pw@a.example/", "not a url", "http://%zz", long} {
		err := commands.ValidateCallbackURL(bad)
		var ve *commands.ValidationError
		if !errors.As(err, &ve) || ve.Field != commands.CallbackURLField {
			t.Errorf("%q: err = %v, want a ValidationError on %s", bad, err, commands.CallbackURLField)
		}
	}
}

func TestServiceAbandonExpiredOnce(t *testing.T) {
	ctx := context.Background()
	svc, store := newService(t)
	md := events.Metadata{CorrelationID: "req_1", Actor: "key:key_2"}
	if _, err := svc.RequestCompletion(ctx, md, requestCmd("chatcmpl-reap1", events.ModeAsync), nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	c, err := svc.StartCompletion(ctx, md, "chatcmpl-reap1", commands.StartCompletion{Executor: "worker:dead", Now: now, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// Before the lease ends nothing happens.
	if _, mine, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_0", Actor: "reaper:a"}, c.ID, commands.AbandonCompletion{Now: now.Add(59 * time.Second)}); !errors.Is(err, commands.ErrWrongState) || mine {
		t.Fatalf("abandon before expiry: mine %v err %v, want ErrWrongState", mine, err)
	}
	// Eight reapers at once after it: one event, one of them stored it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	mineCount := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, mine, err := svc.AbandonExpired(ctx, events.Metadata{CorrelationID: "reap_" + string(rune('a'+i)), Actor: "reaper:r"}, c.ID,
				commands.AbandonCompletion{Now: now.Add(2 * time.Minute)})
			if err != nil && !errors.Is(err, commands.ErrWrongState) && !errors.Is(err, events.ErrConflict) {
				t.Errorf("reaper %d: %v", i, err)
			}
			if mine {
				mu.Lock()
				mineCount++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	evs, err := store.Load(ctx, commands.CompletionStream(c.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got := types(evs); len(got) != 3 || got[2] != "3:"+events.TypeCompletionAbandoned {
		t.Fatalf("stream = %v, want requested, started, abandoned", got)
	}
	if mineCount != 1 {
		t.Errorf("%d reapers report they stored the event, want 1", mineCount)
	}
	// The dead executor's late outcome is refused: nothing is billed.
	_, err = svc.FinishClaimed(ctx, md, c, commands.FinishCompletion{Executor: "worker:dead", Succeeded: &events.CompletionSucceeded{Provider: "p", UpstreamModel: "u", Response: json.RawMessage(`{}`)}})
	if !errors.Is(err, events.ErrConflict) {
		t.Errorf("late finish: err = %v, want a conflict", err)
	}
}
