// Package admission is admission control over a quota.Limiter: a
// request's limits from its plan and overrides, its worst case, the
// atomic admit, the release of one never recorded and the re-derivation
// of reservations that expired unsettled; and, for the workers, the
// settlement once an outcome is recorded (Settler), the extension of a
// renewed claim's reservation (Extender) and the reservation's margin.
// The HTTP edge (handlers) and the worker role (via the server's wiring)
// share it; it knows nothing of HTTP.
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tokens"
)

// Config is what admission needs.
type Config struct {
	Config *config.Config
	// Service reads the completions whose reservations expired unsettled
	// (a *commands.Service).
	Service Completions
	// Limiter keeps the rate windows and budgets.
	Limiter quota.Limiter
	// Tokens bounds prompts for reservations; nil: a default counter (it
	// tokenizes up to 256 KiB of text and bounds bigger prompts by bytes).
	Tokens *tokens.Counter
	Logger *slog.Logger
	Now    func() time.Time
}

// Completions reads a completion from the event log.
type Completions interface {
	Completion(ctx context.Context, completionID string) (completion.Completion, error)
}

// Service is what the settler needs of the command side (a
// *commands.Service): an account's plan and the runaway guard's command.
type Service interface {
	Account(ctx context.Context, accountID string) (account.Account, error)
	GuardAPIKey(ctx context.Context, md events.Metadata, keyID string, g account.RunawayGuard) (account.APIKey, error)
}

// Admitter runs admission control.
type Admitter struct{ cfg Config }

// New returns an Admitter; a nil Logger discards, a nil Now is time.Now.
func New(cfg Config) *Admitter {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tokens == nil {
		cfg.Tokens = &tokens.Counter{}
	}
	return &Admitter{cfg: cfg}
}

// Principal is what admission needs of a key and its account.
type Principal struct {
	AccountID, KeyID, Plan string
	Account, Key           events.LimitOverrides
	Suspended              *events.APIKeySuspended
}

// AccountLimits are a plan's limits with the account's overrides.
func AccountLimits(cfg *config.Config, plan string, o events.LimitOverrides) quota.Limits {
	l := quota.Unlimited()
	if p, ok := cfg.Plan(plan); ok {
		l.RequestsPerMinute, l.TokensPerMinute = p.RequestsPerMinute, p.TokensPerMinute
		if b, ok := p.DailyBudget(); ok {
			l.DailyBudget = b
		}
		if b, ok := p.MonthlyBudget(); ok {
			l.MonthlyBudget = b
		}
	}
	return OverrideLimits(l, o)
}

// OverrideLimits are l with the overrides o sets.
func OverrideLimits(l quota.Limits, o events.LimitOverrides) quota.Limits {
	if o.RequestsPerMinute != nil {
		l.RequestsPerMinute = *o.RequestsPerMinute
	}
	if o.TokensPerMinute != nil {
		l.TokensPerMinute = *o.TokensPerMinute
	}
	if o.DailyBudgetNanoUSD != nil {
		l.DailyBudget = money.NanoUSD(*o.DailyBudgetNanoUSD)
	}
	if o.MonthlyBudgetNanoUSD != nil {
		l.MonthlyBudget = money.NanoUSD(*o.MonthlyBudgetNanoUSD)
	}
	return l
}

// Limits are p's account's and key's limits.
func (a *Admitter) Limits(p Principal) (account, key quota.Limits) {
	return AccountLimits(a.cfg.Config, p.Plan, p.Account), OverrideLimits(quota.Unlimited(), p.Key)
}

// Admitted is an admitted request: its decision (for the headers) and
// the reservation recorded with it.
type Admitted struct {
	Decision    quota.Decision
	Reservation *events.QuotaReserved
	Admission   quota.Admission
}

// SuspendedError refuses a suspended key.
type SuspendedError struct{ Suspension *events.APIKeySuspended }

func (e *SuspendedError) Error() string {
	return fmt.Sprintf("api key suspended (%s)", e.Suspension.Reason)
}

// InvalidError is a request whose worst case cannot be computed: Param
// names the field, Message says why for the client.
type InvalidError struct{ Param, Message string }

func (e *InvalidError) Error() string { return e.Param + ": " + e.Message }

// RefusedError is a request over a limit; Decision says which and when
// it could pass.
type RefusedError struct{ Decision quota.Decision }

func (e *RefusedError) Error() string { return "refused: " + string(e.Decision.Reason) }

// Check asks the limiter whether a minimal request of p would pass,
// counting nothing: what runs before a large body is parsed. A refusal
// is a *RefusedError; another error is the limiter's.
func (a *Admitter) Check(ctx context.Context, p Principal) error {
	acc, key := a.Limits(p)
	ad := quota.MinimalRequest(quota.Admission{ID: "check", AccountID: p.AccountID, KeyID: p.KeyID, Account: acc, Key: key, Now: a.cfg.Now()})
	d, err := a.cfg.Limiter.Check(ctx, ad)
	if err != nil {
		return err
	}
	a.reconcile(ctx, p.AccountID, d.Expired)
	if d.Allowed {
		return nil
	}
	return &RefusedError{Decision: d}
}

// Admit runs admission control for a chat request to model: a suspended
// key is refused (*SuspendedError); otherwise the request's worst case is
// counted against the rate windows and reserved against the budgets in
// one atomic limiter call. The worst case is an upper bound: the prompt
// counted with the model's tokenizer (or bounded by its bytes), and n
// completions of the largest size allowed. A body whose worst case cannot
// be computed is an *InvalidError, a request over a limit a
// *RefusedError; another error is the limiter's.
func (a *Admitter) Admit(ctx context.Context, p Principal, model config.Model, completionID string, body []byte) (*Admitted, error) {
	if s := p.Suspended; s != nil {
		return nil, &SuspendedError{Suspension: s}
	}
	est, err := a.cfg.Tokens.Prompt(body, a.family(model))
	if err != nil {
		var pe *tokens.ParamError
		if errors.As(err, &pe) {
			return nil, &InvalidError{Param: pe.Param, Message: fmt.Sprintf("The request's %s could not be read: %s", pe.Param, pe.Err.Error())}
		}
		return nil, &InvalidError{Param: "messages", Message: fmt.Sprintf("The messages could not be read: %s", err.Error())}
	}
	q := a.cfg.Config.Quota
	tok, cost, err := quota.WorstCase(model.ParsedPrice(), est.PromptTokens, est.MaxTokens, est.N, model.MaxOutputTokens, q.DefaultMaxOutputTokens)
	if err != nil {
		return nil, &InvalidError{Param: "max_tokens", Message: fmt.Sprintf("The request's worst-case cost cannot be computed: %s", err.Error())}
	}
	ttl := q.ReservationTTL.D()
	if ttl == 0 {
		ttl = config.DefaultReservationTTL
	}
	acc, key := a.Limits(p)
	ad := quota.Admission{
		ID: completionID, AccountID: p.AccountID, KeyID: p.KeyID, Account: acc, Key: key,
		Tokens: tok, Cost: cost, Now: a.cfg.Now(), TTL: ttl,
	}
	d, err := a.cfg.Limiter.Admit(ctx, ad)
	if err != nil {
		if quota.Ambiguous(err) {
			// The admission may still run in the store (sent before a
			// pause, run after it): release it, so no stale reservation
			// stays held. Tried for a bounded time: one that never lands
			// expires with its TTL (the completion was never recorded, so
			// it spent nothing).
			r := a.retry()
			r.GiveUp = releaseGiveUp
			go r.Settle(context.WithoutCancel(ctx), quota.Release(ad, a.cfg.Now()), nil)
		}
		return nil, err
	}
	a.reconcile(ctx, p.AccountID, d.Expired)
	if !d.Allowed {
		return nil, &RefusedError{Decision: d}
	}
	return &Admitted{Decision: d, Admission: ad, Reservation: &events.QuotaReserved{
		CostNanoUSD: int64(cost), Tokens: tok, Day: d.Day, Month: d.Month, ExpiresAt: ad.Now.Add(ttl).UTC(),
	}}, nil
}

// Release gives back the reservation of a request that was admitted but
// never recorded (its append failed).
func (a *Admitter) Release(ctx context.Context, ad *Admitted) {
	if ad == nil {
		return
	}
	a.retry().Settle(context.WithoutCancel(ctx), quota.Release(ad.Admission, a.cfg.Now()), nil)
}

func (a *Admitter) retry() Retry {
	return Retry{Limiter: a.cfg.Limiter, Logger: a.cfg.Logger, Now: a.cfg.Now}
}

// family is what bounds the prompt of a model: the worst of its
// deployments (fallbacks included), by provider kind and upstream model.
func (a *Admitter) family(m config.Model) tokens.Family {
	fs := make([]tokens.Family, 0, len(m.Deployments))
	for _, d := range m.Deployments {
		kind, azure := "", false
		for _, p := range a.cfg.Config.Providers {
			if p.Name == d.Provider {
				kind, azure = p.Kind, p.IsAzure()
			}
		}
		fs = append(fs, tokens.ForDeployment(kind, azure, d.Model))
	}
	return tokens.Merge(fs...)
}
