package bus

import (
	"fmt"
	"strings"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
)

// appenderLock is the advisory lock key of the PostgreSQL bus's message
// tables as a log (migration 0007): a statement trigger on each registers
// an inserting transaction as an appender under it before the transaction
// has an id.
const appenderLock int64 = 0x746f6c6c2d627573 // "toll-bus"

// wmXmin is the part of watermill-sql's PostgreSQL select that
// horizonSchema replaces.
const wmXmin = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"

// horizonSchema is watermill-sql's PostgreSQL schema read below the
// horizon of the bus's own appenders instead of the whole server's
// snapshot xmin, which any transaction of any database on the server held
// back (an async job waited 11.5 s behind another database's open
// transaction). Each message table gets the appender trigger, and the
// subscriber's query reads below tollgate_read_horizon — the technique of
// the event store (see events/pgstore). It needs migration 0007 in the
// bus's database, which is the event store's.
type horizonSchema struct {
	wsql.DefaultPostgreSQLSchema
}

// SchemaInitializingQueries implements wsql.SchemaAdapter: the table, then
// its appender trigger.
func (s horizonSchema) SchemaInitializingQueries(p wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	qs, err := s.DefaultPostgreSQLSchema.SchemaInitializingQueries(p)
	if err != nil {
		return nil, err
	}
	return append(qs, wsql.Query{Query: fmt.Sprintf(`CREATE OR REPLACE TRIGGER tollgate_register_appender
		BEFORE INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION bus_register_appender()`, s.MessagesTable(p.Topic))}), nil
}

// SelectQuery implements wsql.SchemaAdapter.
func (s horizonSchema) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	q, err := s.DefaultPostgreSQLSchema.SelectQuery(p)
	if err != nil {
		return q, err
	}
	if strings.Count(q.Query, wmXmin) != 1 {
		return q, fmt.Errorf("bus: watermill-sql's select query has changed its shape, the bus cannot read below its horizon: %s", q.Query)
	}
	q.Query = strings.Replace(q.Query, wmXmin, fmt.Sprintf("transaction_id < (SELECT tollgate_read_horizon(%d))", appenderLock), 1)
	return q, nil
}
