package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/events"
)

// maxBillingAttempts bounds the reloads after a concurrent append to an
// account stream.
const maxBillingAttempts = 5

// LinkCustomer ties a Stripe customer to an account.
func (s *Service) LinkCustomer(ctx context.Context, md events.Metadata, accountID, customerID string) (account.Account, error) {
	return s.decideAccount(ctx, md, accountID, "|"+customerID, func(a account.Account) ([]events.Data, error) {
		return billing.DecideLinkCustomer(a, customerID)
	})
}

// Downgrade downgrades an account whose grace period ended at now; it
// appends nothing when there is nothing to do.
func (s *Service) Downgrade(ctx context.Context, md events.Metadata, accountID string, now time.Time, fallbackPlan string) (account.Account, error) {
	return s.decideAccount(ctx, md, accountID, "|"+fmt.Sprint(now.Unix()), func(a account.Account) ([]events.Data, error) {
		return billing.DecideDowngrade(a, now, fallbackPlan)
	})
}

// decideAccount loads an account, decides and appends, reloading after a
// concurrent append.
func (s *Service) decideAccount(ctx context.Context, md events.Metadata, accountID, suffix string, decide func(account.Account) ([]events.Data, error)) (account.Account, error) {
	md.AccountID = accountID
	a, _, err := update(ctx, s, account.AccountStream(accountID), md, account.FoldAccount, func(account.Account) string { return suffix }, maxBillingAttempts, decide)
	return a, err
}

// ApplyStripeEvent records a verified Stripe event on its account's stream
// and applies it, in one append whose event ids derive from the Stripe
// event id: a redelivery finds the receipt and changes nothing. It returns
// the outcome recorded and whether the event had been recorded before.
func (s *Service) ApplyStripeEvent(ctx context.Context, md events.Metadata, accountID string, ev billing.StripeEvent, p billing.BillingPolicy) (outcome string, duplicate bool, err error) {
	stream := account.AccountStream(accountID)
	for attempt := 0; ; attempt++ {
		evs, err := s.store.Load(ctx, stream)
		if err != nil {
			return "", false, err
		}
		if billing.StripeEventRecorded(evs, ev.ID) {
			return "", true, nil
		}
		a, err := account.FoldAccount(evs)
		if err != nil {
			return "", false, err
		}
		data, err := billing.DecideStripeEvent(a, ev, p)
		if err != nil {
			return "", false, err
		}
		md.AccountID = accountID
		envs := make([]events.Envelope, len(data))
		for i, d := range data {
			if envs[i], err = events.New(stream, d, md, s.now(), billing.StripeEventSeed(ev.ID, d.EventType())); err != nil {
				return "", false, err
			}
		}
		_, err = s.store.Append(ctx, stream, a.Version, envs...)
		if errors.Is(err, events.ErrConflict) && attempt < maxBillingAttempts {
			continue // a concurrent append, maybe this very event redelivered: reload
		}
		if err != nil {
			return "", false, err
		}
		return data[0].(events.BillingWebhookReceived).Outcome, false, nil
	}
}

// RecordStripeEvent records a verified Stripe event that concerns no
// account on its own stream; a redelivery appends nothing.
func (s *Service) RecordStripeEvent(ctx context.Context, md events.Metadata, ev billing.StripeEvent, outcome string) error {
	d := events.BillingWebhookReceived{
		StripeEventID: ev.ID, StripeEventType: ev.Type, StripeCreated: ev.Created.UTC(), APIVersion: ev.APIVersion,
		Livemode: ev.Livemode, StripeCustomerID: ev.CustomerID, Outcome: outcome,
	}
	stream := events.StreamStripeEvent + ev.ID
	e, err := events.New(stream, d, md, s.now(), billing.StripeEventSeed(ev.ID, d.EventType()))
	if err != nil {
		return err
	}
	_, err = s.store.Append(ctx, stream, 0, e)
	if errors.Is(err, events.ErrConflict) {
		return nil // recorded before (with the outcome known then)
	}
	return err
}
