package pgstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

var onlyCreated = pgstore.Filter{Types: []string{events.TypeAccountCreated}}

// readMatchingUntil calls ReadMatching after cur until its cursor is want
// (or 2 s passed) and returns the last result: like readSettled, a read
// may stop below a transaction that ended between its snapshot and its
// look at the locks, and the next one does not.
func readMatchingUntil(t *testing.T, s *pgstore.Store, cur pgstore.Cursor, limit int, f pgstore.Filter, want pgstore.Cursor) ([]events.Envelope, pgstore.Cursor) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		evs, next, err := s.ReadMatching(context.Background(), cur, limit, f)
		if err != nil {
			t.Fatal(err)
		}
		if next == want || time.Now().After(deadline) {
			return evs, next
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cursorOf(e events.Envelope, t *testing.T, s *pgstore.Store) pgstore.Cursor {
	t.Helper()
	c, err := s.CursorAt(context.Background(), e.Position)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ReadMatching returns the matching events of ReadAll and moves its
// cursor past the others: to the last event read when it returned limit,
// to the last event of the log otherwise.
func TestReadMatchingMovesPastOtherTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	if evs, next, err := s.ReadMatching(ctx, pgstore.Cursor{}, 10, onlyCreated); err != nil || len(evs) != 0 || next != (pgstore.Cursor{}) {
		t.Fatalf("empty log: %d events, cursor %+v, %v", len(evs), next, err)
	}
	for i := range 12 {
		stream := fmt.Sprintf("account-acc_%d", i)
		e := ev(t, stream, "acc_1", i, stream)
		if i%4 == 1 {
			e = created(t, stream, "acc_1", i, stream)
		}
		mustAppend(t, s, stream, 0, e)
	}
	settle(t, s, pool)
	want, _, err := s.ReadAll(ctx, pgstore.Cursor{}, 100, onlyCreated)
	if err != nil || len(want) != 3 {
		t.Fatalf("ReadAll = %d, %v", len(want), err)
	}
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}

	evs, next := readMatchingUntil(t, s, pgstore.Cursor{}, 10, onlyCreated, head)
	if ids(evs) != ids(want) || next != head {
		t.Fatalf("ReadMatching = %s, cursor %+v; want %s and the head %+v", ids(evs), next, ids(want), head)
	}
	if evs[0].Data == nil || evs[0].Metadata.AccountID != "acc_1" || evs[0].Position != want[0].Position || !evs[0].OccurredAt.Equal(want[0].OccurredAt) ||
		evs[0].OccurredAt.Location() != time.UTC || evs[0].EventID != want[0].EventID || evs[0].SchemaVersion != want[0].SchemaVersion {
		t.Fatalf("event %+v, ReadAll's %+v", evs[0], want[0])
	}
	if evs, again, err := s.ReadMatching(ctx, next, 10, onlyCreated); err != nil || len(evs) != 0 || again != head {
		t.Fatalf("at the head: %d events, cursor %+v, %v", len(evs), again, err)
	}
	// A full batch stops at its last match; the next one goes on from there.
	evs, next, err = s.ReadMatching(ctx, pgstore.Cursor{}, 2, onlyCreated)
	if err != nil || ids(evs) != ids(want[:2]) || next != cursorOf(want[1], t, s) {
		t.Fatalf("limit 2 = %s, cursor %+v, %v", ids(evs), next, err)
	}
	if evs, next, err = s.ReadMatching(ctx, next, 2, onlyCreated); err != nil || ids(evs) != ids(want[2:]) || next != head {
		t.Fatalf("after the full batch = %s, cursor %+v, %v", ids(evs), next, err)
	}
	// Nothing matching: the cursor still moves to the end.
	if evs, next, err = s.ReadMatching(ctx, pgstore.Cursor{}, 10, pgstore.Filter{Types: []string{"no.such_type"}}); err != nil || len(evs) != 0 || next != head {
		t.Fatalf("no match = %d events, cursor %+v, %v", len(evs), next, err)
	}
	if evs, next, err = s.ReadMatching(ctx, pgstore.Cursor{}, 0, onlyCreated); err != nil || len(evs) != 0 || next != (pgstore.Cursor{}) {
		t.Fatalf("limit 0 = %d events, cursor %+v, %v", len(evs), next, err)
	}
}

// An open appender holds ReadMatching's cursor back below it, whatever
// comes after it and whether or not anything matches; once it commits,
// its matching events are read, and a read that matches nothing moves the
// cursor to the new end.
func TestReadMatchingWaitsForLateCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	a := mustAppend(t, s, "account-a", 0, created(t, "account-a", "acc_1", 0, "a"))[0]
	late := created(t, "account-late", "acc_1", 1, "late")
	tx := openAppender(t, pool, late)
	var err error
	mustAppend(t, s, "apikey-b", 0, ev(t, "apikey-b", "acc_1", 2, "b"))
	c := mustAppend(t, s, "apikey-c", 0, ev(t, "apikey-c", "acc_1", 3, "c"))[0]

	atA := cursorOf(a, t, s)
	evs, next := readMatchingUntil(t, s, pgstore.Cursor{}, 10, onlyCreated, atA)
	if ids(evs) != "account-a/1" || next != atA {
		t.Fatalf("with an appender open = %s, cursor %+v; want account-a/1 and its cursor %+v", ids(evs), next, atA)
	}
	for range 3 {
		if evs, next, err = s.ReadMatching(ctx, atA, 10, onlyCreated); err != nil || len(evs) != 0 || next != atA {
			t.Fatalf("below the open appender = %s, cursor %+v, %v; want nothing and the cursor kept", ids(evs), next, err)
		}
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	atC := cursorOf(c, t, s)
	if evs, next = readMatchingUntil(t, s, atA, 10, onlyCreated, atC); ids(evs) != "account-late/1" || next != atC {
		t.Fatalf("after the commit = %s, cursor %+v; want account-late/1 and the end %+v", ids(evs), next, atC)
	}
	d := mustAppend(t, s, "apikey-d", 0, ev(t, "apikey-d", "acc_1", 4, "d"))[0]
	atD := cursorOf(d, t, s)
	if evs, next = readMatchingUntil(t, s, atC, 10, onlyCreated, atD); len(evs) != 0 || next != atD {
		t.Fatalf("nothing matching after = %s, cursor %+v; want the new end %+v", ids(evs), next, atD)
	}
	if evs, next, err = s.ReadMatching(ctx, atD, 10, onlyCreated); err != nil || len(evs) != 0 || next != atD {
		t.Fatalf("idle = %s, cursor %+v, %v; want it kept", ids(evs), next, err)
	}
}
