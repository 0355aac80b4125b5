package account

import (
	"fmt"
	"strings"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// APIKey is an API key's state, folded from its stream.
type APIKey struct {
	ID        string
	AccountID string
	Name      string
	Hash      string
	Prefix    string
	Revoked   bool
	// Limits are the key's own limits, narrower than its account's.
	Limits events.LimitOverrides
	// Suspended is set while the key is refused admission (runaway guard
	// or operator) until an operator lifts it.
	Suspended *events.APIKeySuspended
	Version   int64
}

// Exists reports whether the key was issued.
func (k APIKey) Exists() bool { return k.Version > 0 }

// APIKeyStream returns the stream id of a key.
func APIKeyStream(keyID string) string { return events.StreamAPIKey + keyID }

// FoldAPIKey rebuilds a key from its events.
func FoldAPIKey(evs []events.Envelope) (APIKey, error) {
	var k APIKey
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return k, err
		}
		switch d := d.(type) {
		case events.APIKeyIssued:
			k.ID, k.AccountID, k.Name, k.Hash, k.Prefix = d.KeyID, d.AccountID, d.Name, d.KeyHash, d.KeyPrefix
		case events.APIKeyRevoked:
			k.Revoked = true
		case events.APIKeyLimitsChanged:
			k.Limits = d.Limits
		case events.APIKeySuspended:
			k.Suspended = &d
		case events.APIKeyUnsuspended:
			k.Suspended = nil
		}
		k.Version = e.StreamVersion
	}
	return k, nil
}

// IssueAPIKey issues a key for an account. The caller generates the secret
// and passes only its hash and prefix.
type IssueAPIKey struct {
	KeyID     string
	AccountID string
	Name      string
	Hash      string
	Prefix    string
}

// DecideIssueAPIKey decides on IssueAPIKey for the given account.
func DecideIssueAPIKey(a Account, k APIKey, c IssueAPIKey) ([]events.Data, error) {
	if !a.Exists() {
		return nil, fmt.Errorf("account %s: %w", c.AccountID, domainerr.ErrNotFound)
	}
	if k.Exists() {
		return nil, fmt.Errorf("key %s: %w", c.KeyID, domainerr.ErrAlreadyExists)
	}
	name := strings.TrimSpace(c.Name)
	if len(name) > 200 {
		return nil, domainerr.Invalid("name", "is longer than 200 characters")
	}
	if len(c.Hash) != 64 || strings.Trim(c.Hash, "0123456789abcdef") != "" {
		return nil, domainerr.Invalid("key_hash", "must be a lower-case hex SHA-256")
	}
	return []events.Data{events.APIKeyIssued{
		KeyID: c.KeyID, AccountID: c.AccountID, Name: name, KeyHash: c.Hash, KeyPrefix: c.Prefix,
	}}, nil
}

// DecideRevokeAPIKey decides on revoking a key. Revoking a revoked key is
// a no-op, so a retried request succeeds.
func DecideRevokeAPIKey(k APIKey) ([]events.Data, error) {
	if !k.Exists() {
		return nil, fmt.Errorf("key: %w", domainerr.ErrNotFound)
	}
	if k.Revoked {
		return nil, nil
	}
	return []events.Data{events.APIKeyRevoked{KeyID: k.ID, AccountID: k.AccountID}}, nil
}

// AtVersion is the stream version the state was folded at.
func (k APIKey) AtVersion() int64 { return k.Version }

// Owner is the account the key belongs to; "" before it exists.
func (k APIKey) Owner() string { return k.AccountID }
