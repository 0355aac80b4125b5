package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func newStore(t testing.TB) (*pgstore.Store, *pgxpool.Pool) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	s, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, pool
}

// ev builds an envelope on stream for account acc at t0+sec seconds, with
// an id derived from seed.
func ev(t *testing.T, stream, acc string, sec int, seed string) events.Envelope {
	t.Helper()
	e, err := events.New(stream, events.APIKeyRevoked{KeyID: "key_" + seed, AccountID: acc},
		events.Metadata{AccountID: acc, Actor: "test"}, t0.Add(time.Duration(sec)*time.Second), seed)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func created(t *testing.T, stream, acc string, sec int, seed string) events.Envelope {
	t.Helper()
	e, err := events.New(stream, events.AccountCreated{AccountID: acc, Name: "n", Plan: "pro"},
		events.Metadata{AccountID: acc}, t0.Add(time.Duration(sec)*time.Second), seed)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustAppend(t *testing.T, s *pgstore.Store, stream string, expected int64, evs ...events.Envelope) []events.Envelope {
	t.Helper()
	out, err := s.Append(context.Background(), stream, expected, evs...)
	if err != nil {
		t.Fatalf("Append %s at %d: %v", stream, expected, err)
	}
	return out
}

// settle checks that every stored event is readable: only this
// database's appending transactions hold readers back, so on a shared,
// busy server nothing needs waiting out. One read may still stop below a
// transaction of the server that ended between its snapshot and its look
// at the locks (see readSettled); the next does not, so a few reads in a
// row, without waiting, must get them all. It returns them and the cursor
// after them.
func settle(t *testing.T, s *pgstore.Store, pool *pgxpool.Pool) ([]events.Envelope, pgstore.Cursor) {
	t.Helper()
	ctx := context.Background()
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	var evs []events.Envelope
	var cur pgstore.Cursor
	for range 5 {
		var err error
		if evs, cur, err = s.ReadAll(ctx, pgstore.Cursor{}, n+1, pgstore.Filter{}); err != nil {
			t.Fatal(err)
		}
		if len(evs) == n {
			return evs, cur
		}
	}
	t.Fatalf("%d of %d committed events readable", len(evs), n)
	return nil, cur
}

func ids(evs []events.Envelope) string {
	s := make([]string, len(evs))
	for i, e := range evs {
		s[i] = fmt.Sprintf("%s/%d", e.StreamID, e.StreamVersion)
	}
	return strings.Join(s, " ")
}

func TestAppendExpectedVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	out := mustAppend(t, s, "apikey-a", 0, ev(t, "apikey-a", "acc_1", 0, "a1"), ev(t, "apikey-a", "acc_1", 1, "a2"))
	if len(out) != 2 || out[0].StreamVersion != 1 || out[1].StreamVersion != 2 {
		t.Fatalf("versions = %s", ids(out))
	}
	if out[0].Position <= 0 || out[1].Position <= out[0].Position {
		t.Errorf("positions = %d, %d; want positive and increasing", out[0].Position, out[1].Position)
	}
	out = mustAppend(t, s, "apikey-a", 2, ev(t, "apikey-a", "acc_1", 2, "a3"))
	if out[0].StreamVersion != 3 {
		t.Errorf("third event at version %d", out[0].StreamVersion)
	}

	for _, expected := range []int64{0, 1, 2, 5} {
		_, err := s.Append(ctx, "apikey-a", expected, ev(t, "apikey-a", "acc_1", 3, fmt.Sprint("late", expected)))
		var ce *events.ConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("Append at %d: err = %v, want *events.ConflictError", expected, err)
		}
		if !errors.Is(err, events.ErrConflict) {
			t.Errorf("errors.Is(%v, ErrConflict) = false", err)
		}
		if ce.StreamID != "apikey-a" || ce.Expected != expected || ce.Actual != 3 {
			t.Errorf("conflict = %+v, want stream apikey-a expected %d actual 3", *ce, expected)
		}
	}
	if v, err := s.Version(ctx, "apikey-a"); err != nil || v != 3 {
		t.Errorf("Version = %d, %v; want 3", v, err)
	}
	if v, err := s.Version(ctx, "apikey-none"); err != nil || v != 0 {
		t.Errorf("Version(empty) = %d, %v; want 0", v, err)
	}
	if out, err := s.Append(ctx, "apikey-a", 3); err != nil || out != nil {
		t.Errorf("Append of nothing = %v, %v", out, err)
	}
}

func TestAppendAnyVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	mustAppend(t, s, "apikey-b", pgstore.AnyVersion, ev(t, "apikey-b", "acc_1", 0, "b1"))
	out := mustAppend(t, s, "apikey-b", pgstore.AnyVersion, ev(t, "apikey-b", "acc_1", 1, "b2"), ev(t, "apikey-b", "acc_1", 2, "b3"))
	if ids(out) != "apikey-b/2 apikey-b/3" {
		t.Errorf("AnyVersion appended %s", ids(out))
	}
	// Concurrent AnyVersion appenders all get in, without gaps.
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Append(ctx, "apikey-b", pgstore.AnyVersion, ev(t, "apikey-b", "acc_1", 3, fmt.Sprint("any", i)))
		})
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			if !errors.Is(err, events.ErrConflict) {
				t.Errorf("AnyVersion append: %v", err)
			}
		}
	}
	loaded, err := s.Load(ctx, "apikey-b")
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 3+n-failed {
		t.Errorf("stream has %d events, want %d", len(loaded), 3+n-failed)
	}
	for i, e := range loaded {
		if e.StreamVersion != int64(i+1) {
			t.Fatalf("version %d at index %d: gap", e.StreamVersion, i)
		}
	}
	t.Logf("%d of %d concurrent AnyVersion appends ran out of retries", failed, n)
}

func TestAppendIdempotentByEventID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	batch := []events.Envelope{ev(t, "apikey-c", "acc_1", 0, "c1"), ev(t, "apikey-c", "acc_1", 1, "c2")}
	first := mustAppend(t, s, "apikey-c", 0, batch...)
	for name, expected := range map[string]int64{"same expected version": 0, "any version": pgstore.AnyVersion} {
		again, err := s.Append(ctx, "apikey-c", expected, batch...)
		if err != nil {
			t.Fatalf("%s: retried Append: %v", name, err)
		}
		if len(again) != len(first) {
			t.Fatalf("%s: retried Append returned %d events, want %d", name, len(again), len(first))
		}
		for i := range first {
			if again[i].EventID != first[i].EventID || again[i].Position != first[i].Position || again[i].StreamVersion != first[i].StreamVersion {
				t.Errorf("%s: event %d = %s v%d @%d, first append gave %s v%d @%d", name, i,
					again[i].EventID, again[i].StreamVersion, again[i].Position, first[i].EventID, first[i].StreamVersion, first[i].Position)
			}
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("events table has %d rows, want 2", n)
	}
	// A batch that is only partly stored is a conflict, not a retry.
	_, err := s.Append(ctx, "apikey-c", 0, batch[0], ev(t, "apikey-c", "acc_1", 2, "c3"))
	if !errors.Is(err, events.ErrConflict) {
		t.Errorf("partly stored batch: err = %v, want ErrConflict", err)
	}
}

func TestAppendRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	mustAppend(t, s, "completion-r", 0, ev(t, "completion-r", "acc_1", 0, "r0"))
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Append(ctx, "completion-r", 1, ev(t, "completion-r", "acc_1", 1, fmt.Sprint("r", i+1)))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		var ce *events.ConflictError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ce):
			if ce.Expected != 1 || ce.Actual != 2 {
				t.Errorf("appender %d: conflict %+v, want expected 1 actual 2", i, *ce)
			}
		default:
			t.Errorf("appender %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d appenders won, want exactly 1", wins)
	}
	if v, _ := s.Version(ctx, "completion-r"); v != 2 {
		t.Errorf("version = %d, want 2", v)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	a1 := created(t, "account-acc_1", "acc_1", 0, "L1")
	a1.Metadata = events.Metadata{AccountID: "acc_1", CorrelationID: "corr", CausationID: "cause", Actor: "admin"}
	mustAppend(t, s, "account-acc_1", 0, a1)
	mustAppend(t, s, "apikey-x", 0, ev(t, "apikey-x", "acc_1", 1, "X1"))
	mustAppend(t, s, "account-acc_1", 1, ev(t, "account-acc_1", "acc_1", 2, "L2"), ev(t, "account-acc_1", "acc_1", 3, "L3"))
	got, err := s.Load(ctx, "account-acc_1")
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "account-acc_1/1 account-acc_1/2 account-acc_1/3" {
		t.Fatalf("Load = %s", ids(got))
	}
	e := got[0]
	if e.EventID != a1.EventID || e.Type != events.TypeAccountCreated || e.SchemaVersion != 1 ||
		!e.OccurredAt.Equal(t0) || e.OccurredAt.Location() != time.UTC || e.Metadata != a1.Metadata || e.Position <= 0 {
		t.Errorf("loaded %+v, appended %+v", e, a1)
	}
	var data, want map[string]any
	if err := json.Unmarshal(e.Data, &data); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(a1.Data, &want); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(data) != fmt.Sprint(want) {
		t.Errorf("data = %s, want %s", e.Data, a1.Data)
	}
	if d, err := events.Decode(e); err != nil || d != (events.AccountCreated{AccountID: "acc_1", Name: "n", Plan: "pro"}) {
		t.Errorf("Decode(loaded) = %+v, %v", d, err)
	}
	if none, err := s.Load(ctx, "account-nobody"); err != nil || len(none) != 0 {
		t.Errorf("Load(unknown) = %v, %v", none, err)
	}
}

func TestReadAllFiltersAndCursors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	// Six events in four transactions, two accounts, two types.
	mustAppend(t, s, "account-acc_1", 0, created(t, "account-acc_1", "acc_1", 0, "1"))
	mustAppend(t, s, "apikey-k1", 0, ev(t, "apikey-k1", "acc_1", 10, "2"), ev(t, "apikey-k1", "acc_1", 20, "3"))
	mustAppend(t, s, "account-acc_2", 0, created(t, "account-acc_2", "acc_2", 30, "4"))
	mustAppend(t, s, "apikey-k2", 0, ev(t, "apikey-k2", "acc_2", 40, "5"), ev(t, "apikey-k2", "acc_2", 50, "6"))
	settle(t, s, pool)

	all, cur, err := s.ReadAll(ctx, pgstore.Cursor{}, 100, pgstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	wantAll := "account-acc_1/1 apikey-k1/1 apikey-k1/2 account-acc_2/1 apikey-k2/1 apikey-k2/2"
	if ids(all) != wantAll {
		t.Fatalf("ReadAll = %s, want %s", ids(all), wantAll)
	}
	if cur.Position != all[5].Position || cur.TransactionID == 0 {
		t.Errorf("cursor = %+v, want the last event's", cur)
	}
	if more, same, err := s.ReadAll(ctx, cur, 100, pgstore.Filter{}); err != nil || len(more) != 0 || same != cur {
		t.Errorf("ReadAll after the end = %s, %+v, %v; want nothing and the same cursor", ids(more), same, err)
	}
	head, err := s.Head(ctx)
	if err != nil || head != cur {
		t.Errorf("Head = %+v, %v; want %+v", head, err, cur)
	}

	// Paging with the returned cursor visits every event once, in order.
	var paged []events.Envelope
	c := pgstore.Cursor{}
	for range 10 {
		page, next, err := s.ReadAll(ctx, c, 4, pgstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 4 {
			t.Fatalf("page of %d, limit 4", len(page))
		}
		paged = append(paged, page...)
		c = next
	}
	if ids(paged) != wantAll {
		t.Errorf("paged = %s", ids(paged))
	}

	// CursorAt resumes after the event at a position.
	at, err := s.CursorAt(ctx, all[2].Position)
	if err != nil {
		t.Fatal(err)
	}
	rest, _, err := s.ReadAll(ctx, at, 100, pgstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if ids(rest) != "account-acc_2/1 apikey-k2/1 apikey-k2/2" {
		t.Errorf("after CursorAt(%d) = %s", all[2].Position, ids(rest))
	}
	if zero, err := s.CursorAt(ctx, 0); err != nil || zero != (pgstore.Cursor{}) {
		t.Errorf("CursorAt(0) = %+v, %v", zero, err)
	}
	if _, err := s.CursorAt(ctx, 999999); err == nil {
		t.Error("CursorAt(missing position) succeeded")
	}

	for _, tc := range []struct {
		name string
		f    pgstore.Filter
		want string
	}{
		{"types", pgstore.Filter{Types: []string{events.TypeAccountCreated}}, "account-acc_1/1 account-acc_2/1"},
		{"several types", pgstore.Filter{Types: []string{events.TypeAccountCreated, events.TypeAPIKeyRevoked}}, wantAll},
		{"unknown type", pgstore.Filter{Types: []string{"nothing.happened"}}, ""},
		{"account", pgstore.Filter{AccountID: "acc_2"}, "account-acc_2/1 apikey-k2/1 apikey-k2/2"},
		{"account and type", pgstore.Filter{AccountID: "acc_1", Types: []string{events.TypeAPIKeyRevoked}}, "apikey-k1/1 apikey-k1/2"},
		{"since inclusive", pgstore.Filter{Since: t0.Add(20 * time.Second)}, "apikey-k1/2 account-acc_2/1 apikey-k2/1 apikey-k2/2"},
		{"until exclusive", pgstore.Filter{Until: t0.Add(20 * time.Second)}, "account-acc_1/1 apikey-k1/1"},
		{"window", pgstore.Filter{Since: t0.Add(10 * time.Second), Until: t0.Add(40 * time.Second)}, "apikey-k1/1 apikey-k1/2 account-acc_2/1"},
		{"window and account", pgstore.Filter{AccountID: "acc_2", Since: t0.Add(10 * time.Second), Until: t0.Add(45 * time.Second)}, "account-acc_2/1 apikey-k2/1"},
		{"without metadata", pgstore.Filter{WithoutMetadata: true}, wantAll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, gotCur, err := s.ReadAll(ctx, pgstore.Cursor{}, 100, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if ids(got) != tc.want {
				t.Errorf("ReadAll = %q, want %q", ids(got), tc.want)
			}
			if tc.f.WithoutMetadata {
				want := slices.Clone(all)
				for i := range want {
					want[i].Metadata = events.Metadata{}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("read without metadata = %+v, want %+v", got, want)
				}
			}
			if len(got) > 0 && gotCur.Position != got[len(got)-1].Position {
				t.Errorf("cursor %+v is not at the last event (%d)", gotCur, got[len(got)-1].Position)
			}
			// A filtered read resumed from its own cursor finds nothing more.
			if more, _, err := s.ReadAll(ctx, gotCur, 100, tc.f); err != nil || len(more) != 0 {
				t.Errorf("resumed filtered read = %s, %v", ids(more), err)
			}
		})
	}
}

// TestReadAllWaitsForLateCommit holds a transaction open after it inserted
// an event; events of transactions that started later are not readable
// until it ends, so a follower never skips it.
func TestReadAllWaitsForLateCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	mustAppend(t, s, "apikey-before", 0, ev(t, "apikey-before", "acc_1", 0, "before"))
	before, cur := settle(t, s, pool)
	if len(before) != 1 {
		t.Fatalf("ReadAll = %s", ids(before))
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below; the rollback is for failures
	late := ev(t, "apikey-late", "acc_1", 1, "late")
	md, _ := json.Marshal(late.Metadata)
	var latePos int64
	if err := tx.QueryRow(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
		VALUES ($1, $2, 1, $3, $4, $5, $6, $7::text::json, $8::text::jsonb) RETURNING position`,
		late.EventID, late.StreamID, late.Type, late.SchemaVersion, late.OccurredAt, "acc_1", string(late.Data), string(md)).Scan(&latePos); err != nil {
		t.Fatal(err)
	}

	// A later transaction commits first, with a higher position.
	early := mustAppend(t, s, "apikey-early", 0, ev(t, "apikey-early", "acc_1", 2, "early"))
	if early[0].Position <= latePos {
		t.Fatalf("early position %d not after late position %d", early[0].Position, latePos)
	}
	for _, f := range []pgstore.Filter{{}, {AccountID: "acc_1"}, {Types: []string{events.TypeAPIKeyRevoked}}} {
		got, next, err := s.ReadAll(ctx, cur, 100, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 || next != cur {
			t.Errorf("filter %+v: ReadAll while a older transaction is open = %s (cursor %+v), want nothing", f, ids(got), next)
		}
	}
	wantHead(t, s, "while a transaction is open", cur)

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	all, next := settle(t, s, pool)
	got := all[1:]
	if ids(got) != "apikey-late/1 apikey-early/1" {
		t.Fatalf("ReadAll after commit = %s, want the late event, then the early one", ids(got))
	}
	if got[0].Position != latePos || got[1].Position != early[0].Position {
		t.Errorf("positions = %d %d, want %d %d", got[0].Position, got[1].Position, latePos, early[0].Position)
	}
	wantHead(t, s, "after commit", next)
}

// wantHead checks that Head is the cursor of the event at want's position
// (positions are unique), on one of a few reads in a row (see settle).
func wantHead(t *testing.T, s *pgstore.Store, when string, want pgstore.Cursor) {
	t.Helper()
	var head pgstore.Cursor
	for range 5 {
		var err error
		if head, err = s.Head(context.Background()); err != nil {
			t.Fatal(err)
		}
		if head.Position == want.Position {
			return
		}
	}
	t.Errorf("Head %s = %+v; want %+v", when, head, want)
}

func TestEventsAreAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := newStore(t)
	mustAppend(t, s, "apikey-z", 0, ev(t, "apikey-z", "acc_1", 0, "z"))
	for _, sql := range []string{
		`UPDATE events SET type = 'x'`,
		`UPDATE events SET data = '{}'::jsonb WHERE stream_id = 'apikey-z'`,
		`DELETE FROM events`,
	} {
		_, err := pool.Exec(ctx, sql)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only refusal", sql, err)
		}
	}
	got, err := s.Load(ctx, "apikey-z")
	if err != nil || len(got) != 1 || got[0].Type != events.TypeAPIKeyRevoked {
		t.Errorf("after refused changes: %s, %v", ids(got), err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	first, err := pgstore.Migrate(ctx, pool)
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if len(first) == 0 {
		t.Fatal("first Migrate applied nothing")
	}
	second, err := pgstore.Migrate(ctx, pool)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(second) != 0 {
		t.Errorf("second Migrate applied %v, want nothing", second)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(first) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(first))
	}
	// Concurrent migrators (several roles starting at once) apply nothing twice.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			applied, err := pgstore.Migrate(ctx, pool)
			if err == nil && len(applied) != 0 {
				err = fmt.Errorf("applied %v again", applied)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestConcurrentFirstMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			applied, err := pgstore.Migrate(ctx, pool)
			errs[i] = err
			mu.Lock()
			total += len(applied)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if total != n || n == 0 {
		t.Errorf("migrators applied %d migrations in total, %d recorded", total, n)
	}
}
