package keyindex_test

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/account/keyindex"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/schemas"
)

func hashOf(i int) string { return strings.Repeat(string(rune('a'+i)), 64) }

func newService(t *testing.T, pool *pgxpool.Pool, inline ...pgstore.InlineProjection) (*commands.Service, *pgstore.Store) {
	t.Helper()
	store, err := pgstore.New(pool, nil, inline...)
	if err != nil {
		t.Fatal(err)
	}
	return commands.NewService(store, func(string) bool { return true }, time.Now), store
}

func issue(t *testing.T, svc *commands.Service, i int) {
	t.Helper()
	ctx := context.Background()
	md := events.Metadata{Actor: "test"}
	if i == 0 {
		if _, err := svc.CreateAccount(ctx, md, account.CreateAccount{AccountID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "free"}); err != nil {
			t.Fatal(err)
		}
	}
	id := "key_" + string(rune('a'+i))
	if _, err := svc.IssueAPIKey(ctx, md, account.IssueAPIKey{KeyID: id, AccountID: "acc_1", Name: id, Hash: hashOf(i), Prefix: "tg_" + id}); err != nil {
		t.Fatal(err)
	}
}

func rows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT key_hash || ' ' || key_id || ' ' || account_id FROM api_key_index ORDER BY key_hash`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var r string
		if err := rs.Scan(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// A key is found the moment IssueAPIKey returns: the index is written in
// the append's transaction. Unknown hashes find nothing.
func TestKeyFoundOnceIssued(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	svc, _ := newService(t, pool, keyindex.Projection{})
	idx := keyindex.New(pool)
	for i := range 3 {
		issue(t, svc, i)
		if id, err := idx.FindAPIKey(ctx, hashOf(i)); err != nil || id != "key_"+string(rune('a'+i)) {
			t.Fatalf("FindAPIKey(key %d) right after issue = %q, %v", i, id, err)
		}
	}
	if id, err := idx.FindAPIKey(ctx, hashOf(9)); err != nil || id != "" {
		t.Errorf("FindAPIKey(unknown) = %q, %v; want \"\", nil", id, err)
	}
	// Issuing again (a retried command) stores nothing new and fails nothing.
	if _, err := svc.IssueAPIKey(ctx, events.Metadata{Actor: "test"}, account.IssueAPIKey{KeyID: "key_a", AccountID: "acc_1", Name: "key_a", Hash: hashOf(0), Prefix: "tg_key_a"}); err == nil {
		t.Error("issuing key_a twice succeeded")
	}
	if got := rows(t, pool); len(got) != 3 {
		t.Errorf("index rows = %v, want 3", got)
	}
}

// The index works beside an event whose JSON holds \u0000 (json's ->>
// fails on such a document: nothing reads other events' JSON).
func TestKeyFoundBesideNulEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	svc, store := newService(t, pool, keyindex.Projection{})
	e, err := events.New("apikey-nul", events.APIKeyRevoked{KeyID: "nul", AccountID: "acc_1"}, events.Metadata{AccountID: "acc_1"}, time.Now(), "nul")
	if err != nil {
		t.Fatal(err)
	}
	e.Data = []byte(`{"key_id":"nul","account_id":"acc_1","note":"nul \u0000 end"}`)
	if _, err := store.Append(ctx, e.StreamID, 0, e); err != nil {
		t.Fatal(err)
	}
	issue(t, svc, 0)
	if id, err := keyindex.New(pool).FindAPIKey(ctx, hashOf(0)); err != nil || id != "key_a" {
		t.Fatalf("FindAPIKey beside an event holding \\u0000 = %q, %v", id, err)
	}
}

// Rebuild gives the live index row for row, and indexes keys appended by
// a store that did not keep the index.
func TestRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	svc, store := newService(t, pool, keyindex.Projection{})
	for i := range 4 {
		issue(t, svc, i)
	}
	live := rows(t, pool)
	if n, err := keyindex.Rebuild(ctx, pool, store); err != nil || n != 4 {
		t.Fatalf("Rebuild = %d, %v; want 4 keys", n, err)
	}
	if got := rows(t, pool); !slices.Equal(got, live) || len(got) != 4 {
		t.Errorf("rebuilt %v\nlive    %v", got, live)
	}
	plain, plainStore := newService(t, pool)
	issue(t, plain, 4)
	if id, _ := keyindex.New(pool).FindAPIKey(ctx, hashOf(4)); id != "" {
		t.Fatalf("a store without the projection indexed key_e")
	}
	if n, err := keyindex.Rebuild(ctx, pool, plainStore); err != nil || n != 5 {
		t.Fatalf("Rebuild = %d, %v; want 5 keys", n, err)
	}
	if id, err := keyindex.New(pool).FindAPIKey(ctx, hashOf(4)); err != nil || id != "key_e" {
		t.Errorf("after Rebuild FindAPIKey(key_e) = %q, %v", id, err)
	}
}

// Migration 0009's backfill indexes the keys issued before it, beside an
// event whose JSON holds \u0000, as Rebuild does.
func TestMigrationBackfillEqualsRebuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	plain, store := newService(t, pool)
	e, err := events.New("apikey-nul", events.APIKeyRevoked{KeyID: "nul", AccountID: "acc_1"}, events.Metadata{AccountID: "acc_1"}, time.Now(), "nul")
	if err != nil {
		t.Fatal(err)
	}
	e.Data = []byte(`{"key_id":"nul","account_id":"acc_1","note":"nul \u0000 end"}`)
	if _, err := store.Append(ctx, e.StreamID, 0, e); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		issue(t, plain, i)
	}
	sql, err := fs.ReadFile(schemas.Migrations, "migrations/0009_api_key_index.sql")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(sql), "INSERT INTO api_key_index")
	end := strings.Index(string(sql)[start:], ";")
	if start < 0 || end < 0 {
		t.Fatal("0009 has no backfill statement")
	}
	if _, err := pool.Exec(ctx, string(sql)[start:start+end]); err != nil {
		t.Fatalf("backfill: %v", err)
	}
	backfilled := rows(t, pool)
	if _, err := keyindex.Rebuild(ctx, pool, store); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, pool); !slices.Equal(got, backfilled) || len(got) != 3 {
		t.Errorf("backfilled %v\nrebuilt    %v", backfilled, got)
	}
}
