package server

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tollgate/tollgate/handlers"
	"github.com/tollgate/tollgate/pgtest"
)

// TestStatementsOfAServingPoolAreBounded: a statement that outlives the
// query timeout fails as a database outage (so a hung server answers 503),
// migrations' context lifts the bound, and a sooner deadline of the caller
// still rules.
func TestStatementsOfAServingPoolAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := openDatabase(ctx, pgtest.NewDatabase(t), 2, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, "SELECT pg_sleep(2)")
	if dep, ok := handlers.Unavailable(err); err == nil || !ok || dep != handlers.DependencyDatabase {
		t.Fatalf("a 2s statement with a 300ms bound: %v (%q %v), want a database outage", err, dep, ok)
	}
	if _, err := pool.Exec(unboundedQueries(ctx), "SELECT pg_sleep(0.6)"); err != nil {
		t.Fatalf("an unbounded statement: %v", err)
	}
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("the pool after a timed-out statement: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := pool.Exec(short, "SELECT pg_sleep(1)"); err == nil {
		t.Fatal("the caller's sooner deadline was ignored")
	}
}

func TestCloseMessagesAreRecognised(t *testing.T) {
	t.Parallel()
	cancel := make([]byte, 16)
	binary.BigEndian.PutUint32(cancel[0:4], 16)
	binary.BigEndian.PutUint32(cancel[4:8], 80877102)
	long := make([]byte, 44) // protocol 3.2: a longer secret key
	binary.BigEndian.PutUint32(long[0:4], 44)
	binary.BigEndian.PutUint32(long[4:8], 80877102)
	if !isCancelRequest(cancel) || !isCancelRequest(long) || isCancelRequest(cancel[:12]) || isCancelRequest([]byte("Q\x00\x00\x00\x0dSELECT 1;\x00\x00\x00")) {
		t.Error("cancel requests misrecognised")
	}
	if !isTerminate([]byte{'X', 0, 0, 0, 4}) || isTerminate([]byte{'X', 0, 0, 0, 5}) || isTerminate([]byte("Q\x00\x00\x00\x04")) {
		t.Error("Terminate misrecognised")
	}
}
