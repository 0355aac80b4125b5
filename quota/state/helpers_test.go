package state_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/projections"
)

// day0 is a Monday midnight UTC.
var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// dump returns every read-model table of schema as sorted text rows.
func dump(t testing.TB, pool *pgxpool.Pool, schema string) map[string][]string {
	t.Helper()
	out, err := projections.Dump(context.Background(), pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
