package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

// A write transaction held open in another database of the server, or in
// this one on a table other than events, never delays a reader.
func TestForeignTransactionsDoNotHoldReadersBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	pgtest.HoldWriteTransaction(t, pgtest.NewDatabase(t))      // another database
	pgtest.HoldWriteTransaction(t, pool.Config().ConnString()) // this database, not an appender
	for i := range 5 {
		stream := fmt.Sprintf("apikey-k%d", i)
		mustAppend(t, s, stream, 0, ev(t, stream, "acc_1", i, stream))
	}
	evs := readSettled(t, s, 5)
	if len(evs) != 5 {
		t.Fatalf("ReadAll with foreign transactions open = %d events; want all 5", len(evs))
	}
	wantHead(t, s, "with foreign transactions open", pgstore.Cursor{Position: evs[4].Position})
	var got int
	_, err := s.CatchUp(ctx, pgstore.CatchUpConfig{Wait: time.Second}, func(evs []events.Envelope, _ pgstore.Cursor) error {
		got += len(evs)
		return nil
	})
	if err != nil || got != 5 {
		t.Fatalf("CatchUp = %d events, %v; want 5 without waiting", got, err)
	}
}

// An appender that is still open holds readers back (and only until it
// ends); CatchUp names it when it waits too long.
func TestOpenAppenderHoldsBackUntilItEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	mustAppend(t, s, "apikey-a", 0, ev(t, "apikey-a", "acc_1", 0, "a"))
	late := ev(t, "apikey-late", "acc_1", 1, "late")
	tx := openAppender(t, pool, late)
	mustAppend(t, s, "apikey-b", 0, ev(t, "apikey-b", "acc_1", 2, "b"))

	if evs := readSettled(t, s, 1); ids(evs) != "apikey-a/1" {
		t.Fatalf("ReadAll with an appender open = %s; want only the event before it", ids(evs))
	}
	appenders, err := s.Appenders(ctx)
	if err != nil || len(appenders) != 1 || appenders[0].TransactionID == 0 {
		t.Fatalf("Appenders = %+v, %v; want the open one with its transaction id", appenders, err)
	}
	var got int
	_, err = s.CatchUp(ctx, pgstore.CatchUpConfig{Wait: 200 * time.Millisecond}, func(evs []events.Envelope, _ pgstore.Cursor) error {
		got += len(evs)
		return nil
	})
	var held *pgstore.HeldBackError
	if !errors.As(err, &held) || got != 1 || held.Horizon != appenders[0].TransactionID {
		t.Fatalf("CatchUp with an appender open = %d events, %v; want 1 then a HeldBackError naming transaction %d", got, err, appenders[0].TransactionID)
	}
	t.Logf("CatchUp: %v", err)

	done := make(chan error, 1)
	first := make(chan string, 1) // the first batch: what it read before waiting
	var all []events.Envelope
	go func() {
		_, err := s.CatchUp(ctx, pgstore.CatchUpConfig{Wait: 20 * time.Second}, func(evs []events.Envelope, _ pgstore.Cursor) error {
			if all == nil {
				first <- ids(evs)
			}
			all = append(all, evs...)
			return nil
		})
		done <- err
	}()
	// The commit comes once CatchUp read what is below the open appender
	// and is waiting for it.
	select {
	case got := <-first:
		if got != "apikey-a/1" {
			t.Fatalf("CatchUp read %s before the commit; want only the event before the open appender", got)
		}
	case err := <-done:
		t.Fatalf("CatchUp ended before the commit: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ids(all) != "apikey-a/1 apikey-late/1 apikey-b/1" {
		t.Fatalf("CatchUp after the commit = %s", ids(all))
	}
}

// A transaction that wrote elsewhere before appending could have taken
// its transaction id unseen by readers: the store refuses it.
func TestAppendAfterAnotherWriteIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := newStore(t)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // it fails
	if _, err := tx.Exec(ctx, `INSERT INTO checkpoints (name, transaction_id, position) VALUES ('x', '1', 0)`); err != nil {
		t.Fatal(err)
	}
	e := ev(t, "apikey-x", "acc_1", 0, "x")
	_, err = tx.Exec(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, data, metadata)
		VALUES ($1, 'apikey-x', 1, $2, 1, $3, '{}', '{}')`, e.EventID, e.Type, e.OccurredAt)
	if err == nil {
		t.Fatal("an append after another write of the same transaction was accepted")
	}
}

// Many appenders at once, and a follower reading in small batches while
// they append: it gets every committed event exactly once, in the order a
// full read gives afterwards.
func TestFollowerUnderConcurrentAppendsSkipsNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, pool := newStore(t)
	const writers, perWriter = 8, 60
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				stream := fmt.Sprintf("apikey-w%d-%d", w, i)
				evs := []events.Envelope{ev(t, stream, "acc_1", i, stream+"a")}
				if i%3 == 0 {
					evs = append(evs, ev(t, stream, "acc_1", i, stream+"b"))
				}
				if _, err := s.Append(ctx, stream, 0, evs...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	go func() { wg.Wait(); close(stop) }()
	var followed []events.Envelope
	var cur pgstore.Cursor
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		default:
		}
		evs, next, err := s.ReadAll(ctx, cur, 7, pgstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		followed, cur = append(followed, evs...), next
	}
	for {
		evs, next, err := s.ReadAll(ctx, cur, 7, pgstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		followed, cur = append(followed, evs...), next
	}
	all := readEverything(t, s, pool)
	if len(followed) != len(all) {
		t.Fatalf("follower read %d events, the store holds %d", len(followed), len(all))
	}
	for i := range all {
		if followed[i].EventID != all[i].EventID {
			t.Fatalf("event %d: follower read %s, full read %s", i, followed[i].EventID, all[i].EventID)
		}
	}
}

func readEverything(t *testing.T, s *pgstore.Store, pool *pgxpool.Pool) []events.Envelope {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	all, _, err := s.ReadAll(context.Background(), pgstore.Cursor{}, n+1, pgstore.Filter{})
	if err != nil || len(all) != n {
		t.Fatalf("full read = %d of %d, %v", len(all), n, err)
	}
	return all
}

// Event data is stored as the exact JSON appended, \u0000 and lone
// surrogate escapes included (keyindex's test checks that the API key
// index still works beside such an event).
func TestEventDataKeptExactly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	raw := `{"key_id":"key_1","account_id":"acc_1",  "note":"nul \u0000 lone \ud800 end"}`
	e := ev(t, "apikey-nul", "acc_1", 0, "nul")
	e.Data = []byte(raw)
	mustAppend(t, s, "apikey-nul", 0, e)
	issued, err := events.New("apikey-key_2", events.APIKeyIssued{KeyID: "key_2", AccountID: "acc_1", Name: "k", KeyHash: "hash_2"},
		events.Metadata{AccountID: "acc_1"}, t0, "issued")
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, issued.StreamID, 0, issued)
	got, err := s.Load(ctx, "apikey-nul")
	if err != nil || len(got) != 1 || string(got[0].Data) != raw {
		t.Fatalf("Load = %v, %v; want the data byte for byte: %s", got, err, raw)
	}
	evs := readSettled(t, s, 2)
	if len(evs) != 2 || string(evs[0].Data) != raw {
		t.Fatalf("ReadAll = %d events", len(evs))
	}
}

// readSettled reads the log from the start until it returns want events
// (or 50 reads, 2 s, have passed) and returns the last read. A read may
// return fewer events than are committed when a transaction of the server
// that was running at its snapshot ended before it looked at the locks:
// that statement cannot tell whether the transaction appended, so it
// stops below it (the next read does not). A transaction still open is
// never passed like that, so what is held back by one (a foreign
// transaction, were it wrongly counted) is held back on every read. No
// read may return more than want.
func readSettled(t *testing.T, s *pgstore.Store, want int) []events.Envelope {
	t.Helper()
	var evs []events.Envelope
	deadline := time.Now().Add(2 * time.Second)
	for range 50 {
		var err error
		if evs, _, err = s.ReadAll(context.Background(), pgstore.Cursor{}, want+1, pgstore.Filter{}); err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		if len(evs) > want {
			t.Fatalf("ReadAll = %s; want at most %d events", ids(evs), want)
		}
		if len(evs) == want || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
	return evs
}

// openAppender inserts e (version 1 of its stream) in a transaction it
// leaves open, as an appender that commits late; the caller commits it
// (or lets the test's end roll it back).
func openAppender(t *testing.T, pool *pgxpool.Pool, e events.Envelope) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
		VALUES ($1, $2, 1, $3, 1, $4, $5, $6::json, $7::jsonb)`,
		e.EventID, e.StreamID, e.Type, e.OccurredAt, e.Metadata.AccountID, string(e.Data), `{"account_id":"`+e.Metadata.AccountID+`"}`); err != nil {
		t.Fatal(err)
	}
	return tx
}
