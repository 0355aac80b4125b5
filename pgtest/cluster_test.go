package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/pgtest"
)

// A private cluster starts with its transaction ids where the test put
// them, and survives a crash-like stop.
func TestClusterStartsFarAlong(t *testing.T) {
	t.Parallel()
	c := pgtest.StartCluster(t, pgtest.ClusterOptions{NextXID: 999_999_000})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := c.CreateDatabase("far")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var xid uint64
	if err := conn.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if xid < 999_999_000 || xid > 1_000_000_000 {
		t.Fatalf("xid %d, want just below 1e9", xid)
	}
	c.Stop("immediate")
	c.Start()
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	defer conn.Close(ctx)
	var one int
	if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Fatalf("after restart: %v", err)
	}
}
