package commands

import (
	"context"
	"strconv"

	"github.com/tollgate/tollgate/events"
)

// appendAtVersion appends events that may recur on a stream (a plan can be
// changed back and forth): their ids derive from the stream, type and the
// version decided on, so a retry of the same change appends nothing new
// while a later change gets ids of its own.
func (s *Service) appendAtVersion(ctx context.Context, streamID string, version int64, md events.Metadata, data []events.Data) ([]events.Envelope, error) {
	return s.appendSeeded(ctx, streamID, version, md, data, "v"+strconv.FormatInt(version, 10))
}

// updateAccount loads an account, decides and appends.
func (s *Service) updateAccount(ctx context.Context, md events.Metadata, accountID string, decide func(Account) ([]events.Data, error)) (Account, error) {
	evs, err := s.store.Load(ctx, AccountStream(accountID))
	if err != nil {
		return Account{}, err
	}
	a, err := FoldAccount(evs)
	if err != nil {
		return Account{}, err
	}
	data, err := decide(a)
	if err != nil {
		return Account{}, err
	}
	md.AccountID = a.ID
	stored, err := s.appendAtVersion(ctx, AccountStream(accountID), a.Version, md, data)
	if err != nil {
		return Account{}, err
	}
	return FoldAccount(append(evs, stored...))
}

// updateAPIKey loads a key, decides and appends.
func (s *Service) updateAPIKey(ctx context.Context, md events.Metadata, keyID string, decide func(APIKey) ([]events.Data, error)) (APIKey, error) {
	evs, err := s.store.Load(ctx, APIKeyStream(keyID))
	if err != nil {
		return APIKey{}, err
	}
	k, err := FoldAPIKey(evs)
	if err != nil {
		return APIKey{}, err
	}
	data, err := decide(k)
	if err != nil {
		return APIKey{}, err
	}
	md.AccountID = k.AccountID
	stored, err := s.appendAtVersion(ctx, APIKeyStream(keyID), k.Version, md, data)
	if err != nil {
		return APIKey{}, err
	}
	return FoldAPIKey(append(evs, stored...))
}

// ChangePlan moves an account to another plan.
func (s *Service) ChangePlan(ctx context.Context, md events.Metadata, accountID string, cmd ChangePlan) (Account, error) {
	return s.updateAccount(ctx, md, accountID, func(a Account) ([]events.Data, error) {
		return DecideChangePlan(a, cmd, s.planExists)
	})
}

// ChangeAccountLimits sets an account's limit overrides.
func (s *Service) ChangeAccountLimits(ctx context.Context, md events.Metadata, accountID string, l events.LimitOverrides) (Account, error) {
	return s.updateAccount(ctx, md, accountID, func(a Account) ([]events.Data, error) {
		return DecideChangeAccountLimits(a, l)
	})
}

// ChangeAPIKeyLimits sets a key's own limits.
func (s *Service) ChangeAPIKeyLimits(ctx context.Context, md events.Metadata, keyID string, l events.LimitOverrides) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k APIKey) ([]events.Data, error) {
		return DecideChangeAPIKeyLimits(k, l)
	})
}

// SuspendAPIKey suspends a key on an operator's word.
func (s *Service) SuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, DecideSuspendAPIKey)
}

// UnsuspendAPIKey lifts a key's suspension.
func (s *Service) UnsuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, DecideUnsuspendAPIKey)
}

// GuardAPIKey runs the runaway guard on a key's spend figures, suspending
// it when they passed the ceiling.
func (s *Service) GuardAPIKey(ctx context.Context, md events.Metadata, keyID string, g RunawayGuard) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k APIKey) ([]events.Data, error) {
		return DecideRunawayGuard(k, g)
	})
}
