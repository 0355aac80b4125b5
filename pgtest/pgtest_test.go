package pgtest_test

import (
	"context"
	"io/fs"
	"testing"

	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/schemas"
)

// NewPool's databases are migrated copies of one template, each its own.
func TestNewPoolIsAMigratedDatabaseOfItsOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	names, err := fs.Glob(schemas.Migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	a, dsnA := pgtest.NewPool(t)
	b, dsnB := pgtest.NewPool(t)
	if dsnA == dsnB {
		t.Fatalf("one database for two pools: %s", dsnA)
	}
	var applied int
	if err := a.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&applied); err != nil || applied != len(names) {
		t.Fatalf("%d migrations applied (%v), want %d", applied, err, len(names))
	}
	if again, err := pgstore.Migrate(ctx, a); err != nil || len(again) != 0 {
		t.Fatalf("Migrate on a NewPool database applied %v (%v), want nothing", again, err)
	}
	if _, err := a.Exec(ctx, `INSERT INTO schema_migrations (name) VALUES ('only_in_a')`); err != nil {
		t.Fatal(err)
	}
	var inB int
	if err := b.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE name = 'only_in_a'`).Scan(&inB); err != nil || inB != 0 {
		t.Fatalf("a row written in one database is in the other: %d %v", inB, err)
	}
}
