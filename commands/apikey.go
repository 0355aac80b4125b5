package commands

import (
	"context"
	"errors"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Commands on an apikey-… stream.

// APIKey returns a key, or ErrNotFound.
func (s *Service) APIKey(ctx context.Context, keyID string) (account.APIKey, error) {
	return get(ctx, s, account.APIKeyStream(keyID), "key "+keyID, account.FoldAPIKey)
}

// IssueAPIKey issues a key.
func (s *Service) IssueAPIKey(ctx context.Context, md events.Metadata, cmd account.IssueAPIKey) (account.APIKey, error) {
	a, err := s.Account(ctx, cmd.AccountID)
	if err != nil && !errors.Is(err, domainerr.ErrNotFound) {
		return account.APIKey{}, err
	}
	md.AccountID = cmd.AccountID
	k, _, err := update(ctx, s, account.APIKeyStream(cmd.KeyID), md, account.FoldAPIKey, once, 0, func(k account.APIKey) ([]events.Data, error) {
		return account.DecideIssueAPIKey(a, k, cmd)
	})
	return k, err
}

// RevokeAPIKey revokes a key.
func (s *Service) RevokeAPIKey(ctx context.Context, md events.Metadata, keyID string) (account.APIKey, error) {
	k, _, err := update(ctx, s, account.APIKeyStream(keyID), md, account.FoldAPIKey, once, 0, account.DecideRevokeAPIKey)
	return k, err
}

// updateAPIKey loads a key, decides and appends; the events may recur on
// the stream (see atVersion).
func (s *Service) updateAPIKey(ctx context.Context, md events.Metadata, keyID string, decide func(account.APIKey) ([]events.Data, error)) (account.APIKey, error) {
	k, _, err := update(ctx, s, account.APIKeyStream(keyID), md, account.FoldAPIKey, atVersion, 0, decide)
	return k, err
}

// ChangeAPIKeyLimits sets a key's own limits.
func (s *Service) ChangeAPIKeyLimits(ctx context.Context, md events.Metadata, keyID string, l events.LimitOverrides) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k account.APIKey) ([]events.Data, error) {
		return account.DecideChangeAPIKeyLimits(k, l)
	})
}

// SuspendAPIKey suspends a key on an operator's word.
func (s *Service) SuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, account.DecideSuspendAPIKey)
}

// UnsuspendAPIKey lifts a key's suspension.
func (s *Service) UnsuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, account.DecideUnsuspendAPIKey)
}

// GuardAPIKey runs the runaway guard on a key's spend figures, suspending
// it when they passed the ceiling.
func (s *Service) GuardAPIKey(ctx context.Context, md events.Metadata, keyID string, g account.RunawayGuard) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k account.APIKey) ([]events.Data, error) {
		return account.DecideRunawayGuard(k, g)
	})
}
