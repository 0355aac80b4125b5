// Package keyindex is the API key index: the read model that maps a
// secret's hash to the key it belongs to, for authentication. It is an
// inline projection: the event store applies it in the transaction that
// appends apikey.issued, so a key works the moment its issue is stored and
// authentication never reads event JSON. Rebuild replays the issued keys
// from the log and gives the same table.
package keyindex

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// Projection keeps api_key_index. Pass it to pgstore.New so every append
// of apikey.issued writes its row in the same transaction.
type Projection struct{}

var _ pgstore.InlineProjection = Projection{}

// Handles reports whether the projection reads events of type t.
func (Projection) Handles(t string) bool { return t == events.TypeAPIKeyIssued }

// Apply indexes the issued keys among evs. A hash already indexed keeps
// its first key (a retried append changes nothing).
func (Projection) Apply(ctx context.Context, tx pgx.Tx, evs []events.Envelope) error {
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return fmt.Errorf("key index: %w", err)
		}
		k, ok := d.(events.APIKeyIssued)
		if !ok {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO api_key_index (key_hash, key_id, account_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			k.KeyHash, k.KeyID, k.AccountID); err != nil {
			return fmt.Errorf("key index: %s: %w", k.KeyID, err)
		}
	}
	return nil
}

// Index answers authentication's question over api_key_index.
type Index struct{ pool *pgxpool.Pool }

// New returns the index read through pool.
func New(pool *pgxpool.Pool) *Index { return &Index{pool: pool} }

// FindAPIKey returns the id of the key whose secret hashes to keyHash, or
// "" when no key has that hash.
func (i *Index) FindAPIKey(ctx context.Context, keyHash string) (string, error) {
	var id string
	err := i.pool.QueryRow(ctx, `SELECT key_id FROM api_key_index WHERE key_hash = $1`, keyHash).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("find api key: %w", err)
	}
	return id, nil
}

// Rebuild empties api_key_index and replays every apikey.issued event
// committed before it started, in the log's global order, in one
// transaction: readers see the old table or the rebuilt one.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *pgstore.Store) (int, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("rebuild key index: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `DELETE FROM api_key_index`); err != nil {
		return 0, fmt.Errorf("rebuild key index: %w", err)
	}
	n, cur := 0, pgstore.Cursor{}
	for {
		evs, next, err := store.ReadAll(ctx, cur, 1000, pgstore.Filter{Types: []string{events.TypeAPIKeyIssued}})
		if err != nil {
			return n, fmt.Errorf("rebuild key index: %w", err)
		}
		if len(evs) == 0 {
			break
		}
		if err := (Projection{}).Apply(ctx, tx, evs); err != nil {
			return n, err
		}
		n, cur = n+len(evs), next
	}
	return n, tx.Commit(ctx)
}
