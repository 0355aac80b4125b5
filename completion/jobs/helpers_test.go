package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/projections/projectionstest"
)

var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func newLog(t testing.TB, pool *pgxpool.Pool) *projectionstest.Log {
	return projectionstest.NewLog(t, pool)
}

// newSet is the jobs read model alone, in schema.
func newSet(t testing.TB, pool *pgxpool.Pool, schema string) *projections.Set {
	t.Helper()
	s, err := projections.NewSet(pool, schema, nil, nil, jobs.New(schema))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func handleAll(t testing.TB, s *projections.Set, evs ...events.Envelope) {
	t.Helper()
	projectionstest.HandleAll(t, s, evs...)
}

// buildAll is the read models a rebuild in these tests builds: jobs.
func buildAll(schema string) []projections.Projector {
	return []projections.Projector{jobs.New(schema)}
}

// dump returns every read-model table of schema as sorted text rows.
func dump(t testing.TB, pool *pgxpool.Pool, schema string) map[string][]string {
	t.Helper()
	out, err := projections.Dump(context.Background(), pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
