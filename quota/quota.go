// Package quota is Tollgate's admission control: sliding-window rate
// limits (requests and tokens per minute) and money budgets (per UTC day
// and month), per account and per API key.
//
// The decisions are pure functions of a scope's state (Decide, WorstCase,
// Periods); the adapters keep that state and apply a decision atomically:
// quota/memory under one mutex for a single replica, quota/redis with one
// Lua script per admission so every replica shares one limit. Both
// adapters pass the same contract suite (quota/quotatest).
//
// A budget admission reserves the request's worst-case cost against
// spent+reserved, atomically, so concurrent requests cannot overshoot: a
// request is admitted only if spent + reserved + its reservation fits the
// budget. Settlement replaces the reservation by the real cost; failure
// releases it all; a reservation never settled expires after its TTL and
// is reported to the admission that sweeps it (Decision.Expired), whose
// caller re-derives its spend from the event log. Settlements are
// idempotent by completion id, so they can be retried until they land.
package quota

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/tollgate/tollgate/money"
)

// Window is the rate limits' sliding window, kept in one-second buckets.
const Window = time.Minute

// WindowSeconds is Window in buckets: a bucket of second s is in the
// window ending at now while s > now - WindowSeconds.
const WindowSeconds = int64(Window / time.Second)

// NoBudget marks a budget that is not limited.
const NoBudget money.NanoUSD = -1

// Limits are the effective limits of one scope (an account or a key).
// Zero rates are unlimited; a budget of NoBudget is unlimited.
type Limits struct {
	RequestsPerMinute int64
	TokensPerMinute   int64
	DailyBudget       money.NanoUSD
	MonthlyBudget     money.NanoUSD
}

// Unlimited returns limits that never reject.
func Unlimited() Limits { return Limits{DailyBudget: NoBudget, MonthlyBudget: NoBudget} }

// Admission asks to admit one request.
type Admission struct {
	// ID identifies the reservation: the completion id.
	ID        string
	AccountID string
	KeyID     string
	Account   Limits
	Key       Limits
	// Tokens counts against tokens per minute: the prompt estimate plus
	// the largest completion allowed.
	Tokens int64
	// Cost is the worst-case cost reserved against the budgets.
	Cost money.NanoUSD
	Now  time.Time
	// TTL is how long the reservation is held if never settled.
	TTL time.Duration
}

// Reason names the limit that rejected a request.
type Reason string

// Reasons, in the order they are checked: the key's own limits first.
const (
	ReasonNone               Reason = ""
	KeyRequestsPerMinute     Reason = "key_requests_per_minute"
	KeyTokensPerMinute       Reason = "key_tokens_per_minute"
	AccountRequestsPerMinute Reason = "account_requests_per_minute"
	AccountTokensPerMinute   Reason = "account_tokens_per_minute"
	KeyDailyBudget           Reason = "key_daily_budget"
	KeyMonthlyBudget         Reason = "key_monthly_budget"
	AccountDailyBudget       Reason = "account_daily_budget"
	AccountMonthlyBudget     Reason = "account_monthly_budget"
)

// IsBudget reports whether r is a budget (not a rate) limit.
func (r Reason) IsBudget() bool {
	switch r {
	case KeyDailyBudget, KeyMonthlyBudget, AccountDailyBudget, AccountMonthlyBudget:
		return true
	}
	return false
}

// RateStatus is what the x-ratelimit-*-requests or -tokens headers say:
// the narrowest scope's limit, what remains of it, and how long until the
// window is empty again.
type RateStatus struct {
	Limit     int64
	Remaining int64
	Reset     time.Duration
}

// Decision is the outcome of an admission.
type Decision struct {
	Allowed bool
	Reason  Reason
	// RetryAfter is how long until the request could be admitted.
	RetryAfter time.Duration
	// Requests and Tokens are the header figures; Limit 0 when unlimited.
	Requests RateStatus
	Tokens   RateStatus
	// Day and Month are the budget periods charged.
	Day, Month string
	// Expired are the account's reservations this call released because
	// their TTL passed unsettled (a settlement lost with the process that
	// was retrying it, or a completion still running). The caller
	// re-derives what they spent from the event log (see Settle: a
	// settlement after expiry spends its cost).
	Expired []Reservation
}

// Bucket is one second of a window.
type Bucket struct {
	Requests int64
	Tokens   int64
}

// Budget is one scope's budget figures in one period.
type Budget struct {
	Spent    money.NanoUSD
	Reserved money.NanoUSD
}

// ScopeState is what a decision needs of one scope: its window (buckets
// by unix second) and its budgets of the current day and month.
type ScopeState struct {
	Window map[int64]Bucket
	Day    Budget
	Month  Budget
}

// Periods returns the UTC day (YYYY-MM-DD) and month (YYYY-MM) of t and
// when each ends.
func Periods(t time.Time) (day, month string, dayEnd, monthEnd time.Time) {
	t = t.UTC()
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	m := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return d.Format(time.DateOnly), m.Format("2006-01"), d.AddDate(0, 0, 1), m.AddDate(0, 1, 0)
}

// WorstCase returns what a request can cost at most: promptTokens plus n
// times the largest completion it allows per choice — maxTokens if the
// request set it, capped by the model's cap; else the model's cap; else
// defaultMax. The prompt is billed once whatever n; every choice's
// completion is billed. An n below 1 counts as 1.
func WorstCase(price money.Price, promptTokens, maxTokens, n, modelCap, defaultMax int64) (tokens int64, cost money.NanoUSD, err error) {
	out := defaultMax
	switch {
	case maxTokens > 0 && (modelCap <= 0 || maxTokens <= modelCap):
		out = maxTokens
	case modelCap > 0:
		out = modelCap
	}
	n = max(n, 1)
	if out > 0 && n > math.MaxInt64/out {
		return 0, 0, fmt.Errorf("%d choices of %d tokens overflow", n, out)
	}
	out *= n
	if promptTokens > math.MaxInt64-out {
		return 0, 0, fmt.Errorf("%d prompt and %d completion tokens overflow", promptTokens, out)
	}
	cost, err = price.Cost(promptTokens, out)
	return promptTokens + out, cost, err
}

// windowUse sums the buckets inside the window ending at nowSec.
func windowUse(w map[int64]Bucket, nowSec int64) (requests, tokens, newest int64, secs []int64) {
	for s, b := range w {
		if s <= nowSec-WindowSeconds {
			continue
		}
		requests += b.Requests
		tokens += b.Tokens
		secs = append(secs, s)
		newest = max(newest, s)
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
	return requests, tokens, newest, secs
}

// retryAfter is how long until enough of the window has slid out to free
// excess units: each bucket leaves the window 60 s after its second.
func retryAfter(w map[int64]Bucket, secs []int64, excess int64, tokens bool, nowMs int64) time.Duration {
	var freed int64
	for _, s := range secs {
		if tokens {
			freed += w[s].Tokens
		} else {
			freed += w[s].Requests
		}
		if freed >= excess {
			return time.Duration((s+WindowSeconds)*1000-nowMs) * time.Millisecond
		}
	}
	// More than the whole window's capacity: it can never pass as is;
	// the longest a window takes to empty is the honest answer.
	return Window
}

// Decide decides on an admission given the key's and the account's
// state. It is what both adapters apply atomically (Redis in Lua, which
// mirrors it line for line).
func Decide(key, account ScopeState, a Admission) Decision {
	nowMs := a.Now.UnixMilli()
	nowSec := nowMs / 1000
	day, month, _, _ := Periods(a.Now)
	d := Decision{Day: day, Month: month}

	type scope struct {
		st               ScopeState
		lim              Limits
		rpm, tpm         Reason
		daily, monthly   Reason
		req, tok, newest int64
		secs             []int64
	}
	scopes := []*scope{
		{st: key, lim: a.Key, rpm: KeyRequestsPerMinute, tpm: KeyTokensPerMinute, daily: KeyDailyBudget, monthly: KeyMonthlyBudget},
		{st: account, lim: a.Account, rpm: AccountRequestsPerMinute, tpm: AccountTokensPerMinute, daily: AccountDailyBudget, monthly: AccountMonthlyBudget},
	}
	for _, s := range scopes {
		s.req, s.tok, s.newest, s.secs = windowUse(s.st.Window, nowSec)
	}
	reject := func(r Reason, after time.Duration) {
		if d.Reason == ReasonNone {
			d.Reason, d.RetryAfter = r, after
		}
	}
	for _, s := range scopes {
		if l := s.lim.RequestsPerMinute; l > 0 && s.req+1 > l {
			reject(s.rpm, retryAfter(s.st.Window, s.secs, s.req+1-l, false, nowMs))
		}
		if l := s.lim.TokensPerMinute; l > 0 && s.tok+a.Tokens > l {
			after := Window
			if a.Tokens <= l {
				after = retryAfter(s.st.Window, s.secs, s.tok+a.Tokens-l, true, nowMs)
			}
			reject(s.tpm, after)
		}
	}
	for _, s := range scopes {
		if b := s.lim.DailyBudget; b >= 0 && s.st.Day.Spent+s.st.Day.Reserved+a.Cost > b {
			reject(s.daily, BudgetRetry(s.daily, a.Now))
		}
		if b := s.lim.MonthlyBudget; b >= 0 && s.st.Month.Spent+s.st.Month.Reserved+a.Cost > b {
			reject(s.monthly, BudgetRetry(s.monthly, a.Now))
		}
	}
	d.Allowed = d.Reason == ReasonNone
	FillHeaders(&d, a, WindowFigures{Requests: scopes[0].req, Tokens: scopes[0].tok, Newest: scopes[0].newest},
		WindowFigures{Requests: scopes[1].req, Tokens: scopes[1].tok, Newest: scopes[1].newest})
	return d
}

// WindowFigures are a scope's window totals before the admission: the
// requests and tokens in the window and its newest second.
type WindowFigures struct{ Requests, Tokens, Newest int64 }

// FillHeaders sets the header figures: for each dimension the scope with
// the least left binds. Decide and the Redis adapter (whose script
// returns the figures) share it.
func FillHeaders(d *Decision, a Admission, key, account WindowFigures) {
	nowMs := a.Now.UnixMilli()
	for i, w := range []WindowFigures{key, account} {
		lim := a.Key
		if i == 1 {
			lim = a.Account
		}
		if d.Allowed {
			w.Requests, w.Tokens, w.Newest = w.Requests+1, w.Tokens+a.Tokens, nowMs/1000
		}
		reset := time.Duration(0)
		if w.Requests > 0 {
			reset = time.Duration((w.Newest+WindowSeconds)*1000-nowMs) * time.Millisecond
		}
		if l := lim.RequestsPerMinute; l > 0 {
			st := RateStatus{Limit: l, Remaining: max(l-w.Requests, 0), Reset: reset}
			if d.Requests.Limit == 0 || st.Remaining < d.Requests.Remaining {
				d.Requests = st
			}
		}
		if l := lim.TokensPerMinute; l > 0 {
			st := RateStatus{Limit: l, Remaining: max(l-w.Tokens, 0), Reset: reset}
			if d.Tokens.Limit == 0 || st.Remaining < d.Tokens.Remaining {
				d.Tokens = st
			}
		}
	}
}

// BudgetRetry is how long until a budget reason's period ends.
func BudgetRetry(r Reason, now time.Time) time.Duration {
	_, _, dayEnd, monthEnd := Periods(now)
	switch r {
	case KeyDailyBudget, AccountDailyBudget:
		return dayEnd.Sub(now)
	case KeyMonthlyBudget, AccountMonthlyBudget:
		return monthEnd.Sub(now)
	}
	return 0
}

// Settlement ends a reservation: Cost (0 when released) is spent in the
// reservation's periods, the reservation is released, and the tokens it
// counted against the window are corrected to Tokens.
type Settlement struct {
	ID        string
	AccountID string
	KeyID     string
	// Reserved and ReservedTokens are what admission reserved; At is when.
	Reserved       money.NanoUSD
	ReservedTokens int64
	At             time.Time
	Day, Month     string
	// Cost and Tokens are the real figures (0 for a release).
	Cost   money.NanoUSD
	Tokens int64
	Now    time.Time
	// GuardWindow is the runaway guard's look-back (0: none).
	GuardWindow time.Duration
}

// SettleResult says what a settlement saw.
type SettleResult struct {
	// KeySpend is the key's spend within the guard window, this
	// settlement included.
	KeySpend money.NanoUSD
	// Duplicate: the reservation was settled before (a retry whose first
	// attempt landed); nothing changed.
	Duplicate bool
}

// SettledRetention is how long a limiter remembers a settled reservation
// id, so that a retried settlement (or an admission that arrives after its
// release, or the re-derivation of an expired reservation racing its own
// settlement) changes nothing. Retries land within seconds of the store
// coming back; a settlement still failing after half of it is given up
// and re-derived once its reservation expires. Each id costs about 100
// bytes (Redis) for this long: 15 minutes at 2,000 settlements a second
// is about 180 MB.
const SettledRetention = 15 * time.Minute

// MinimalRequest is what Check asks of the limits: one request, one token,
// one nano-USD. A request refused that is refused whatever it holds.
func MinimalRequest(a Admission) Admission {
	a.Tokens, a.Cost = 1, 1
	return a
}

// ScopeUsage is a scope's live figures, for GET /v1/quota.
type ScopeUsage struct {
	Requests, Tokens int64
	// Reset is how long until the window is empty.
	Reset      time.Duration
	Day, Month Budget
}

// Usage is an account's and one key's live figures.
type Usage struct {
	Account, Key ScopeUsage
}

// Snapshot is what a limiter is seeded with after a restart or a Redis
// flush, from the quota_state read model.
type Snapshot struct {
	// Budgets by scope ("account" or "key:<id>") and period ("day:<YYYY-MM-DD>"
	// or "month:<YYYY-MM>").
	Budgets map[string]map[string]Budget
	// Windows by scope, bucket by unix second.
	Windows map[string]map[int64]Bucket
	// Reservations outstanding.
	Reservations []Reservation
}

// Reservation is one outstanding reservation.
type Reservation struct {
	ID         string
	KeyID      string
	Cost       money.NanoUSD
	Tokens     int64
	Day, Month string
	ExpiresAt  time.Time
}

// Seeder loads an account's snapshot. It is called the first time a
// limiter meets an account since it started (or since Redis lost it).
type Seeder func(ctx context.Context, accountID string, now time.Time) (Snapshot, error)

// Limiter keeps quota state and applies decisions atomically.
type Limiter interface {
	// Admit decides and, if allowed, counts the request and reserves its
	// cost. An admission whose id was settled already (its release ran
	// first) is refused with an error and reserves nothing.
	Admit(ctx context.Context, a Admission) (Decision, error)
	// Check decides as Admit would, counting and reserving nothing: what
	// admission control asks before it reads a large body, with
	// MinimalRequest, so that a request over a limit costs no parsing.
	Check(ctx context.Context, a Admission) (Decision, error)
	// Settle ends a reservation (a release is a settlement of cost 0). It
	// is idempotent by Settlement.ID: a second settlement of one id within
	// the adapter's retention (SettledRetention for Redis, two minutes in
	// process) changes nothing and says Duplicate.
	Settle(ctx context.Context, s Settlement) (SettleResult, error)
	// Peek returns live figures without changing them.
	Peek(ctx context.Context, accountID, keyID string, now time.Time) (Usage, error)
	// Extend moves an outstanding reservation's end later (never
	// earlier) and reports whether it is held; a settled or unknown
	// reservation is left alone.
	Extend(ctx context.Context, e Extension) (bool, error)
}

// ErrLimiter wraps failures of the limiter's store.
var ErrLimiter = errors.New("quota limiter")

// Ambiguous reports whether a limiter call that failed with err may still
// have run in the store: it timed out after the call was sent (a paused
// Redis runs what it had received once it resumes).
func Ambiguous(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// ScopeAccount names the account's scope in a Snapshot.
const ScopeAccount = "account"

// ScopeKey names a key's scope in a Snapshot.
func ScopeKey(keyID string) string { return "key:" + keyID }

// UsageOf is a scope's live figures at now.
func UsageOf(st ScopeState, now time.Time) ScopeUsage {
	req, tok, newest, _ := windowUse(st.Window, now.Unix())
	u := ScopeUsage{Requests: req, Tokens: tok, Day: st.Day, Month: st.Month}
	if req > 0 {
		u.Reset = time.Duration((newest+WindowSeconds)*1000-now.UnixMilli()) * time.Millisecond
	}
	return u
}

// Extension moves an outstanding reservation's end: a completion still
// running (its executor renewed its lease) keeps its reservation for as
// long as it runs, so concurrent admissions keep counting it.
type Extension struct {
	ID        string
	AccountID string
	ExpiresAt time.Time
	Now       time.Time
}
