package projections_test

import (
	"context"
	"testing"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/projections"
	"github.com/tollgate/tollgate/usage"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections/projectionstest"
)

func buildAll(schema string) []projections.Projector {
	return []projections.Projector{usage.New(schema), jobs.New(schema)}
}

// evlog is the tests' event log on a real store.
type evlog = projectionstest.Log

func newLog(t testing.TB, pool *pgxpool.Pool) *evlog { return projectionstest.NewLog(t, pool) }

func newSet(t testing.TB, pool *pgxpool.Pool, schema string) *projections.Set {
	t.Helper()
	s, err := projections.NewSet(pool, schema, nil, nil, buildAll(schema)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func handleAll(t testing.TB, s *projections.Set, evs ...events.Envelope) {
	t.Helper()
	projectionstest.HandleAll(t, s, evs...)
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

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
