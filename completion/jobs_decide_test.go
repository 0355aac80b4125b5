package completion_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/decidetest"

	"github.com/tollgate/tollgate/completion"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

var (
	withCallback = events.CompletionRequested{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini", Mode: events.ModeAsync,
		Request: json.RawMessage(`{"callback_url":"https://hooks.acme.example/cb","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
	}
	abandoned = events.CompletionAbandoned{
		CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
		Executor: "worker:w1", LeaseExpiresAt: decidetest.T0.Add(time.Minute), Reason: "lease_expired",
	}
	cbDelivered = events.CompletionCallbackDelivered{CompletionID: "chatcmpl-abc123", URL: "https://hooks.acme.example/cb", Status: 204, Attempts: 2}
	cbFailed    = events.CompletionCallbackFailed{CompletionID: "chatcmpl-abc123", URL: "https://hooks.acme.example/cb", Status: 503, Attempts: 5, Error: "receiver answered 503"}
)

func TestDecideAbandonCompletion(t *testing.T) {
	t.Parallel()
	abandon := func(now time.Time, reason string) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) {
			return completion.DecideAbandonCompletion(c, completion.AbandonCompletion{Now: now, Reason: reason})
		}
	}
	expiry := started.LeaseExpiresAt
	custom := abandoned
	custom.Reason = "executor_lost"
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "running, lease expired", Given: []events.Data{requested, started}, When: abandon(expiry.Add(time.Second), ""), Then: []events.Data{abandoned}},
		{Name: "running, lease ends now", Given: []events.Data{requested, started}, When: abandon(expiry, ""), Then: []events.Data{abandoned}},
		{Name: "reason kept", Given: []events.Data{requested, started}, When: abandon(expiry.Add(time.Hour), "executor_lost"), Then: []events.Data{custom}},
		{Name: "running, lease still valid", Given: []events.Data{requested, started}, When: abandon(expiry.Add(-time.Nanosecond), ""), Err: domainerr.ErrWrongState},
		{Name: "queued", Given: []events.Data{requested}, When: abandon(expiry.Add(time.Hour), ""), Err: domainerr.ErrWrongState},
		{Name: "succeeded", Given: []events.Data{requested, started, succeeded}, When: abandon(expiry.Add(time.Hour), ""), Err: domainerr.ErrWrongState},
		{Name: "failed", Given: []events.Data{requested, started, failed}, When: abandon(expiry.Add(time.Hour), ""), Err: domainerr.ErrWrongState},
		{Name: "abandoned already", Given: []events.Data{requested, started, abandoned}, When: abandon(expiry.Add(time.Hour), ""), Err: domainerr.ErrWrongState},
		{Name: "unknown", When: abandon(expiry, ""), Err: domainerr.ErrNotFound},
		{Name: "its reservation is released with it", Given: []events.Data{requested, reserved, started}, When: abandon(expiry.Add(time.Second), ""),
			Then: []events.Data{abandoned, events.QuotaReleased{CompletionID: reserved.CompletionID, AccountID: reserved.AccountID, KeyID: reserved.KeyID,
				ReservedNanoUSD: reserved.CostNanoUSD, ReservedTokens: reserved.Tokens, Reason: events.ReleaseAbandoned, Day: reserved.Day, Month: reserved.Month}}},
	})
}

func TestDecideRecordCallback(t *testing.T) {
	t.Parallel()
	record := func(cmd completion.RecordCallback) func(completion.Completion) ([]events.Data, error) {
		return func(c completion.Completion) ([]events.Data, error) { return completion.DecideRecordCallback(c, cmd) }
	}
	// The dispatcher reports what happened; the decision names the
	// completion and its URL from the state.
	ok := &events.CompletionCallbackDelivered{Status: 204, Attempts: 2}
	bad := &events.CompletionCallbackFailed{Status: 503, Attempts: 5, Error: "receiver answered 503"}
	abandonedFailed := cbFailed
	done := []events.Data{withCallback, started, succeeded}
	decidetest.Run(t, completion.CompletionStream(requested.CompletionID), completion.FoldCompletion, []decidetest.Case[completion.Completion]{
		{Name: "delivered", Given: done, When: record(completion.RecordCallback{Delivered: ok}), Then: []events.Data{cbDelivered}},
		{Name: "failed", Given: done, When: record(completion.RecordCallback{Failed: bad}), Then: []events.Data{cbFailed}},
		{Name: "after a failed completion", Given: []events.Data{withCallback, started, failed}, When: record(completion.RecordCallback{Delivered: ok}), Then: []events.Data{cbDelivered}},
		{Name: "after abandonment", Given: []events.Data{withCallback, started, abandoned}, When: record(completion.RecordCallback{Failed: bad}), Then: []events.Data{abandonedFailed}},
		{Name: "second outcome", Given: append(done, cbDelivered), When: record(completion.RecordCallback{Delivered: ok}), Err: domainerr.ErrAlreadyExists},
		{Name: "outcome after failure", Given: append(done, cbFailed), When: record(completion.RecordCallback{Delivered: ok}), Err: domainerr.ErrAlreadyExists},
		{Name: "still running", Given: []events.Data{withCallback, started}, When: record(completion.RecordCallback{Delivered: ok}), Err: domainerr.ErrWrongState},
		{Name: "no callback", Given: []events.Data{requested, started, succeeded}, When: record(completion.RecordCallback{Delivered: ok}), Err: domainerr.ErrWrongState},
		{Name: "unknown", When: record(completion.RecordCallback{Delivered: ok}), Err: domainerr.ErrNotFound},
		{Name: "non-2xx delivery", Given: done, When: record(completion.RecordCallback{Delivered: &events.CompletionCallbackDelivered{Status: 500, Attempts: 1}}), Err: domainerr.ErrInvalid, Field: "status"},
		{Name: "no attempts", Given: done, When: record(completion.RecordCallback{Failed: &events.CompletionCallbackFailed{Attempts: 0}}), Err: domainerr.ErrInvalid, Field: "attempts"},
		{Name: "no outcome", Given: done, When: record(completion.RecordCallback{}), Err: domainerr.ErrInvalid, Field: "outcome"},
		{Name: "both outcomes", Given: done, When: record(completion.RecordCallback{Delivered: ok, Failed: bad}), Err: domainerr.ErrInvalid, Field: "outcome"},
	})
}

func TestFoldAbandonedAndCallback(t *testing.T) {
	t.Parallel()
	c, err := completion.FoldCompletion(decidetest.History(t, "completion-chatcmpl-abc123", withCallback, started, abandoned, cbFailed))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != completion.StatusAbandoned || !c.Finished() || c.Abandoned == nil || c.Succeeded != nil || c.Version != 4 {
		t.Errorf("status %q finished %v abandoned %+v version %d", c.Status, c.Finished(), c.Abandoned, c.Version)
	}
	if !c.FinishedAt.Equal(decidetest.T0.Add(2 * time.Second)) {
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
	t.Parallel()
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
			out, url := completion.SplitCallbackURL(json.RawMessage(tc.in))
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
	t.Parallel()
	for _, ok := range []string{"https://hooks.acme.example/tollgate", "http://127.0.0.1:8080/cb?x=1", "https://[::1]:443/"} {
		if err := completion.ValidateCallbackURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	long := "https://a.example/" + string(make([]byte, 2048))
	for _, bad := range []string{"", "ftp://a.example/", "file:///etc/passwd", "javascript:alert(1)", "//a.example/x", "https://", "https://user:pw@a.example/", "not a url", "http://%zz", long} {
		err := completion.ValidateCallbackURL(bad)
		var ve *domainerr.ValidationError
		if !errors.As(err, &ve) || ve.Field != completion.CallbackURLField {
			t.Errorf("%q: err = %v, want a domainerr.ValidationError on %s", bad, err, completion.CallbackURLField)
		}
	}
}
