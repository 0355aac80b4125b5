package completion

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// CompletionStatus is where a completion request stands.
type CompletionStatus string

// Completion statuses.
const (
	StatusNone      CompletionStatus = ""
	StatusQueued    CompletionStatus = "queued"
	StatusRunning   CompletionStatus = "running"
	StatusSucceeded CompletionStatus = "succeeded"
	StatusFailed    CompletionStatus = "failed"
	// StatusAbandoned: the executor's claim expired without an outcome.
	StatusAbandoned CompletionStatus = "abandoned"
)

// Completion is a completion request's state, folded from its stream.
type Completion struct {
	ID             string
	AccountID      string
	KeyID          string
	Model          string
	Mode           string
	Request        json.RawMessage
	Status         CompletionStatus
	Executor       string
	LeaseExpiresAt time.Time
	RequestedAt    time.Time
	StartedAt      time.Time
	FinishedAt     time.Time
	Succeeded      *events.CompletionSucceeded
	Failed         *events.CompletionFailed
	Abandoned      *events.CompletionAbandoned
	// Retries counts the times an expired claim sent the job back to the
	// queue (completion.requeued).
	Retries int
	// Renewals counts the current claim's lease renewals
	// (completion.lease_renewed); LeaseExpiresAt is the latest one's.
	Renewals int
	// CallbackURL is where the result is to be sent ("" for none); it was
	// taken out of Request, which is what the provider gets.
	CallbackURL string
	// CallbackDelivered and CallbackFailed are the callback's outcome.
	CallbackDelivered *events.CompletionCallbackDelivered
	CallbackFailed    *events.CompletionCallbackFailed
	// Reservation is the budget reservation admission made, if any; its
	// settlement is decided with the outcome.
	Reservation *events.QuotaReserved
	Version     int64
}

// Finished reports whether the completion has its final outcome.
func (c Completion) Finished() bool {
	return c.Status == StatusSucceeded || c.Status == StatusFailed || c.Status == StatusAbandoned
}

// CompletionStream returns the stream id of a completion.
func CompletionStream(completionID string) string { return events.StreamCompletion + completionID }

// FoldCompletion rebuilds a completion from its events.
func FoldCompletion(evs []events.Envelope) (Completion, error) {
	var c Completion
	return c.Apply(evs...)
}

// Apply returns the state after evs, which continue c's stream.
func (c Completion) Apply(evs ...events.Envelope) (Completion, error) {
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return c, err
		}
		switch d := d.(type) {
		case events.CompletionRequested:
			c.ID, c.AccountID, c.KeyID, c.Model, c.Mode, c.Request = d.CompletionID, d.AccountID, d.KeyID, d.Model, d.Mode, d.Request
			c.Request, c.CallbackURL = SplitCallbackURL(d.Request)
			c.Status, c.RequestedAt = StatusQueued, e.OccurredAt
		case events.CompletionStarted:
			c.Status, c.Executor, c.LeaseExpiresAt, c.StartedAt = StatusRunning, d.Executor, d.LeaseExpiresAt, e.OccurredAt
			c.Renewals = 0
		case events.CompletionLeaseRenewed:
			c.LeaseExpiresAt, c.Renewals = d.LeaseExpiresAt, d.Renewal
			if c.Reservation != nil && !d.ReservationExpiresAt.IsZero() {
				r := *c.Reservation
				r.ExpiresAt = d.ReservationExpiresAt.UTC()
				c.Reservation = &r
			}
		case events.CompletionSucceeded:
			c.Status, c.FinishedAt = StatusSucceeded, e.OccurredAt
			c.Succeeded = &d
		case events.CompletionFailed:
			c.Status, c.FinishedAt = StatusFailed, e.OccurredAt
			c.Failed = &d
		case events.QuotaReserved:
			c.Reservation = &d
		case events.CompletionAbandoned:
			c.Status, c.FinishedAt = StatusAbandoned, e.OccurredAt
			c.Abandoned = &d
		case events.CompletionRequeued:
			// Back in the queue: the dead claim is forgotten, the
			// reservation stays for the retry to settle.
			c.Status, c.Executor, c.LeaseExpiresAt, c.StartedAt = StatusQueued, "", time.Time{}, time.Time{}
			c.Retries, c.Renewals = d.Retry, 0
		case events.CompletionCallbackDelivered:
			c.CallbackDelivered = &d
		case events.CompletionCallbackFailed:
			c.CallbackFailed = &d
		}
		c.Version = e.StreamVersion
	}
	return c, nil
}

// RequestCompletion records a client's request.
type RequestCompletion struct {
	CompletionID string
	AccountID    string
	KeyID        string
	Model        string
	Mode         string
	Request      json.RawMessage
	// Reservation, when admission reserved budget, is recorded in the
	// same append as the request (quota.reserved).
	Reservation *events.QuotaReserved
}

// DecideRequestCompletion decides on RequestCompletion.
func DecideRequestCompletion(c Completion, cmd RequestCompletion) ([]events.Data, error) {
	if c.Version > 0 {
		return nil, fmt.Errorf("completion %s: %w", cmd.CompletionID, domainerr.ErrAlreadyExists)
	}
	if cmd.Mode != events.ModeSync && cmd.Mode != events.ModeAsync {
		return nil, domainerr.Invalid("mode", "must be %q or %q", events.ModeSync, events.ModeAsync)
	}
	if cmd.Model == "" {
		return nil, domainerr.Invalid("model", "is required")
	}
	if !json.Valid(cmd.Request) {
		return nil, domainerr.Invalid("request", "is not JSON")
	}
	out := []events.Data{events.CompletionRequested{
		CompletionID: cmd.CompletionID, AccountID: cmd.AccountID, KeyID: cmd.KeyID,
		Model: cmd.Model, Mode: cmd.Mode, Request: cmd.Request,
	}}
	if r := cmd.Reservation; r != nil {
		res, err := decideReservation(cmd, *r)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

// StartCompletion claims a queued completion for one executor.
type StartCompletion struct {
	Executor string
	Now      time.Time
	Lease    time.Duration
}

// DecideStartCompletion decides on a claim: only a queued completion can be
// claimed, so a redelivered message finds it running or finished and gets
// ErrAlreadyClaimed.
func DecideStartCompletion(c Completion, cmd StartCompletion) ([]events.Data, error) {
	switch c.Status {
	case StatusNone:
		return nil, fmt.Errorf("completion: %w", domainerr.ErrNotFound)
	case StatusQueued:
	default:
		return nil, fmt.Errorf("completion %s is %s: %w", c.ID, c.Status, domainerr.ErrAlreadyClaimed)
	}
	if cmd.Executor == "" {
		return nil, domainerr.Invalid("executor", "is required")
	}
	if cmd.Lease <= 0 {
		return nil, domainerr.Invalid("lease", "must be positive")
	}
	return []events.Data{events.CompletionStarted{
		CompletionID: c.ID, Executor: cmd.Executor, LeaseExpiresAt: cmd.Now.Add(cmd.Lease).UTC(),
	}}, nil
}

// FinishCompletion records the outcome of a running completion: exactly
// one of Succeeded and Failed is set.
type FinishCompletion struct {
	Executor  string
	Succeeded *events.CompletionSucceeded
	Failed    *events.CompletionFailed
	// Attempts are the attempts that failed before the outcome (retries,
	// fallbacks); each becomes a completion.attempt_failed event, appended
	// with the outcome.
	Attempts []events.CompletionAttemptFailed
}

// DecideFinishCompletion decides on an outcome. Only the executor holding
// the claim may finish a completion, and only once.
func DecideFinishCompletion(c Completion, cmd FinishCompletion) ([]events.Data, error) {
	if c.Status != StatusRunning {
		return nil, fmt.Errorf("completion %s is %q, not running: %w", c.ID, c.Status, domainerr.ErrWrongState)
	}
	if cmd.Executor != c.Executor {
		return nil, fmt.Errorf("completion %s is claimed by %s, not %s: %w", c.ID, c.Executor, cmd.Executor, domainerr.ErrAlreadyClaimed)
	}
	out := make([]events.Data, 0, len(cmd.Attempts)+2)
	for i, at := range cmd.Attempts {
		at.CompletionID, at.Attempt = c.ID, i+1
		out = append(out, at)
	}
	switch {
	case cmd.Succeeded != nil && cmd.Failed == nil:
		s := *cmd.Succeeded
		s.CompletionID, s.AccountID, s.KeyID, s.Model = c.ID, c.AccountID, c.KeyID, c.Model
		if s.Usage.PromptTokens < 0 || s.Usage.CompletionTokens < 0 || s.CostNanoUSD < 0 {
			return nil, domainerr.Invalid("usage", "tokens and cost cannot be negative")
		}
		s.Usage.TotalTokens = s.Usage.PromptTokens + s.Usage.CompletionTokens
		return append(append(out, s), settlement(c, &s, "")...), nil
	case cmd.Failed != nil && cmd.Succeeded == nil:
		f := *cmd.Failed
		f.CompletionID, f.AccountID, f.KeyID, f.Model = c.ID, c.AccountID, c.KeyID, c.Model
		return append(append(out, f), settlement(c, nil, events.ReleaseFailed)...), nil
	default:
		return nil, domainerr.Invalid("outcome", "exactly one of succeeded and failed is required")
	}
}

// CallbackURLField is the body field of a chat request that names the
// URL the job's result is sent to. Tollgate takes it out of the request
// before the provider sees it.
const CallbackURLField = "callback_url"

// maxCallbackURL bounds a callback URL's length.
const maxCallbackURL = 2048

// SplitCallbackURL returns the request without its top-level callback_url
// field, and that field's value ("" when absent or not a string). The
// other fields keep their bytes and order, so what the provider gets is
// the client's body minus one field. A body that is not a JSON object is
// returned as it is.
func SplitCallbackURL(req json.RawMessage) (json.RawMessage, string) {
	// Most requests have no callback: skip the walk for them.
	if !bytes.Contains(req, []byte(`"`+CallbackURLField+`"`)) {
		return req, ""
	}
	out, cb := req, ""
	// A duplicated key is removed every time; the last value wins, as in
	// encoding/json. The bound only guards against a pathological body.
	for range 16 {
		start, end, val, ok := findTopLevelKey(out, CallbackURLField)
		if !ok {
			break
		}
		var s string
		if json.Unmarshal(val, &s) == nil {
			cb = s
		}
		out = append(append(make(json.RawMessage, 0, len(out)-(end-start)), out[:start]...), out[end:]...)
	}
	return out, cb
}

// findTopLevelKey finds key among obj's top-level members and returns the
// byte range to cut to remove the member (with one separating comma) and
// the member's raw value.
func findTopLevelKey(obj []byte, key string) (start, end int, val json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, 0, nil, false
	}
	first := true
	prev := int(dec.InputOffset())
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, 0, nil, false
		}
		k, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return 0, 0, nil, false
		}
		cur := int(dec.InputOffset())
		if k == key {
			// A member after the first one starts with its comma. The
			// first one has none before it: cut the comma after it.
			if first {
				i := cur
				for i < len(obj) && (obj[i] == ' ' || obj[i] == '\t' || obj[i] == '\n' || obj[i] == '\r') {
					i++
				}
				if i < len(obj) && obj[i] == ',' {
					cur = i + 1
				}
			}
			return prev, cur, raw, true
		}
		first, prev = false, cur
	}
	return 0, 0, nil, false
}

// ValidateCallbackURL checks a callback URL as given by a client: an
// absolute http or https URL with a host and no credentials. Whether its
// address may be reached (private networks) is the dispatcher's call, at
// connection time.
func ValidateCallbackURL(raw string) error {
	if raw == "" || len(raw) > maxCallbackURL {
		return domainerr.Invalid(CallbackURLField, "must be an http or https URL of at most %d characters", maxCallbackURL)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return domainerr.Invalid(CallbackURLField, "is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return domainerr.Invalid(CallbackURLField, "must use http or https, not %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return domainerr.Invalid(CallbackURLField, "must name a host")
	case u.User != nil:
		return domainerr.Invalid(CallbackURLField, "must not carry credentials")
	}
	return nil
}

// AbandonCompletion ends a running completion whose claim expired.
type AbandonCompletion struct {
	// Now is the reaper's clock reading.
	Now time.Time
	// Reason is recorded in the event; "lease_expired" when empty.
	Reason string
}

// expiredAt is what abandoning and requeueing both need: a running
// completion whose lease has expired at now. A missing one gets
// ErrNotFound, a finished, queued or still-leased one ErrWrongState.
func (c Completion) expiredAt(now time.Time) error {
	switch {
	case c.Status == StatusNone:
		return fmt.Errorf("completion: %w", domainerr.ErrNotFound)
	case c.Status != StatusRunning:
		return fmt.Errorf("completion %s is %q, not running: %w", c.ID, c.Status, domainerr.ErrWrongState)
	case now.Before(c.LeaseExpiresAt):
		return fmt.Errorf("completion %s: lease of %s valid until %s: %w", c.ID, c.Executor, c.LeaseExpiresAt.Format(time.RFC3339), domainerr.ErrWrongState)
	}
	return nil
}

// DecideAbandonCompletion decides on ending a completion whose executor
// died or hung: only a running completion whose lease has expired at Now
// can be abandoned. A finished, queued or still-leased completion gets
// ErrWrongState, so a second reaper (or a second pass) decides nothing.
func DecideAbandonCompletion(c Completion, cmd AbandonCompletion) ([]events.Data, error) {
	if err := c.expiredAt(cmd.Now); err != nil {
		return nil, err
	}
	reason := cmd.Reason
	if reason == "" {
		reason = "lease_expired"
	}
	out := []events.Data{events.CompletionAbandoned{
		CompletionID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID, Model: c.Model,
		Executor: c.Executor, LeaseExpiresAt: c.LeaseExpiresAt.UTC(), Reason: reason,
	}}
	// Whatever the dead executor reserved is released in the same append.
	return append(out, settlement(c, nil, events.ReleaseAbandoned)...), nil
}

// ErrNoRetry: an expired claim's completion may not go back to the queue
// (a synchronous request, retries used up, or a reservation that would
// expire before a retry could finish); the caller abandons it instead.
var ErrNoRetry = errors.New("no retry")

// RequeueCompletion sends a queued job whose claim expired back to the
// queue, for another executor to run.
type RequeueCompletion struct {
	// Now is the reaper's clock reading.
	Now time.Time
	// MaxRetries is how many requeues a completion may have; the expiry
	// after the last one abandons.
	MaxRetries int
	// Lease is the lease a retry's claim will get: a retry is only worth
	// starting if the budget reservation outlives it.
	Lease time.Duration
	// Reason is recorded in the event; "lease_expired" when empty.
	Reason string
}

// DecideRequeueCompletion decides on requeueing a running completion whose
// lease has expired at Now. Like DecideAbandonCompletion, a finished,
// queued or still-leased completion gets ErrWrongState. It gets ErrNoRetry
// (the caller abandons instead) when:
//   - the request is synchronous: the API instance that held the client's
//     connection died with it, so nobody waits for a retry's answer (the
//     job id the client may have got at the response deadline shows the
//     abandonment);
//   - it was requeued MaxRetries times already;
//   - its budget reservation expires before a retry claimed now could end:
//     the limiter would free the budget while the retry may still spend it.
//
// The reservation is neither settled nor released: it stays held for the
// retry, which settles it with its outcome.
func DecideRequeueCompletion(c Completion, cmd RequeueCompletion) ([]events.Data, error) {
	if err := c.expiredAt(cmd.Now); err != nil {
		return nil, err
	}
	switch {
	case cmd.MaxRetries < 0:
		return nil, domainerr.Invalid("max_retries", "must not be negative")
	case cmd.Lease <= 0:
		return nil, domainerr.Invalid("lease", "must be positive")
	case c.Mode != events.ModeAsync:
		return nil, fmt.Errorf("completion %s is %s, its client is gone: %w", c.ID, c.Mode, ErrNoRetry)
	case c.Retries >= cmd.MaxRetries:
		return nil, fmt.Errorf("completion %s was requeued %d times: %w", c.ID, c.Retries, ErrNoRetry)
	case c.Reservation != nil && cmd.Now.Add(cmd.Lease).After(c.Reservation.ExpiresAt):
		return nil, fmt.Errorf("completion %s: its reservation expires at %s, before a retry's lease would end: %w",
			c.ID, c.Reservation.ExpiresAt.Format(time.RFC3339), ErrNoRetry)
	}
	reason := cmd.Reason
	if reason == "" {
		reason = "lease_expired"
	}
	return []events.Data{events.CompletionRequeued{
		CompletionID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID, Model: c.Model,
		Executor: c.Executor, LeaseExpiresAt: c.LeaseExpiresAt.UTC(), Retry: c.Retries + 1, Reason: reason,
	}}, nil
}

// RecordCallback records the outcome of sending a finished job's result
// to its callback URL: exactly one of Delivered and Failed is set.
type RecordCallback struct {
	Delivered *events.CompletionCallbackDelivered
	Failed    *events.CompletionCallbackFailed
}

// DecideRecordCallback decides on a callback outcome. A completion has at
// most one: a second dispatcher (or a retry after a crash) that delivered
// again gets ErrAlreadyExists and records nothing more.
func DecideRecordCallback(c Completion, cmd RecordCallback) ([]events.Data, error) {
	switch {
	case c.Status == StatusNone:
		return nil, fmt.Errorf("completion: %w", domainerr.ErrNotFound)
	case !c.Finished():
		return nil, fmt.Errorf("completion %s is %q, not finished: %w", c.ID, c.Status, domainerr.ErrWrongState)
	case c.CallbackURL == "":
		return nil, fmt.Errorf("completion %s has no callback: %w", c.ID, domainerr.ErrWrongState)
	case c.CallbackDelivered != nil || c.CallbackFailed != nil:
		return nil, fmt.Errorf("callback of %s: %w", c.ID, domainerr.ErrAlreadyExists)
	}
	switch {
	case cmd.Delivered != nil && cmd.Failed == nil:
		d := *cmd.Delivered
		d.CompletionID, d.URL = c.ID, c.CallbackURL
		if d.Status < 200 || d.Status > 299 {
			return nil, domainerr.Invalid("status", "a delivery is a 2xx answer, got %d", d.Status)
		}
		if d.Attempts < 1 {
			return nil, domainerr.Invalid("attempts", "must be at least 1")
		}
		return []events.Data{d}, nil
	case cmd.Failed != nil && cmd.Delivered == nil:
		f := *cmd.Failed
		f.CompletionID, f.URL = c.ID, c.CallbackURL
		if f.Attempts < 1 {
			return nil, domainerr.Invalid("attempts", "must be at least 1")
		}
		return []events.Data{f}, nil
	default:
		return nil, domainerr.Invalid("outcome", "exactly one of delivered and failed is required")
	}
}

// AtVersion is the stream version the state was folded at.
func (c Completion) AtVersion() int64 { return c.Version }

// Owner is the account the completion belongs to; "" before it exists.
func (c Completion) Owner() string { return c.AccountID }
