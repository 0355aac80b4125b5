package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

// The PostgreSQL bus reads below its own appenders' horizon: a write
// transaction held open in another database of the server (and one in
// this database on another table) delays no message. With watermill-sql's
// server-wide snapshot xmin, nothing was delivered until they ended.
func TestSQLBusIgnoresForeignTransactions(t *testing.T) {
	t.Parallel()
	cfg := sqlConfig(t)
	pgtest.HoldWriteTransaction(t, pgtest.NewDatabase(t))
	pgtest.HoldWriteTransaction(t, cfg.Pool.Config().ConnString())
	pub, err := bus.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	publishAll(t, pub, []events.Envelope{testEvent(t, "acc_1", 1), testEvent(t, "acc_1", 2), testEvent(t, "acc_2", 3)})
	sub, err := bus.NewSubscriber(cfg, "horizon")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := sub.Subscribe(ctx, bus.Topic)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := receive(t, ch, 3)
	t.Logf("3 messages in %s with foreign transactions open", time.Since(start).Round(time.Millisecond))
	if len(got) != 3 {
		t.Fatalf("received %d of 3", len(got))
	}
}
