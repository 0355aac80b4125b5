package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

func TestEventsExport(t *testing.T) {
	pool, dsn := pgtest.NewPool(t)
	t.Setenv("TOLLGATE_DATABASE_URL", dsn)
	t.Setenv("TOLLGATE_CONFIG", "")
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	day1 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	day2 := day1.AddDate(0, 0, 1)
	appendOne := func(account string, d events.Data, at time.Time) events.Envelope {
		t.Helper()
		e, err := events.New(events.StreamAccount+account, d, events.Metadata{AccountID: account}, at, "")
		if err != nil {
			t.Fatal(err)
		}
		out, err := store.Append(ctx, e.StreamID, pgstore.AnyVersion, e)
		if err != nil {
			t.Fatal(err)
		}
		return out[0]
	}
	a1 := appendOne("acc_a", events.AccountCreated{AccountID: "acc_a", Name: "A", Plan: "free"}, day1)
	appendOne("acc_b", events.AccountCreated{AccountID: "acc_b", Name: "B", Plan: "free"}, day1)
	appendOne("acc_a", events.BillingCustomerLinked{AccountID: "acc_a", StripeCustomerID: "cus_a"}, day2)
	appendOne("acc_b", events.BillingCustomerLinked{AccountID: "acc_b", StripeCustomerID: "cus_b"}, day2)

	export := func(args ...string) []events.Envelope {
		t.Helper()
		var stdout, stderr bytes.Buffer
		// Every event committed before the export started is printed: no
		// retry loop, even on a shared server with other databases busy.
		if err := run(ctx, append([]string{"events", "export"}, args...), &stdout, &stderr); err != nil {
			t.Fatalf("export %v: %v\n%s", args, err, stderr.String())
		}
		var out []events.Envelope
		sc := bufio.NewScanner(&stdout)
		for sc.Scan() {
			var e events.Envelope
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			out = append(out, e)
		}
		return out
	}
	describe := func(evs []events.Envelope) string {
		var parts []string
		for _, e := range evs {
			parts = append(parts, fmt.Sprintf("%s/%s", e.Metadata.AccountID, e.Type))
		}
		return strings.Join(parts, " ")
	}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "acc_a/account.created acc_b/account.created acc_a/billing.customer_linked acc_b/billing.customer_linked"},
		{[]string{"--account", "acc_b"}, "acc_b/account.created acc_b/billing.customer_linked"},
		{[]string{"--type", "billing.customer_linked"}, "acc_a/billing.customer_linked acc_b/billing.customer_linked"},
		{[]string{"--since", "2026-11-02"}, "acc_a/billing.customer_linked acc_b/billing.customer_linked"},
		{[]string{"--until", "2026-11-02T00:00:00Z"}, "acc_a/account.created acc_b/account.created"},
		{[]string{"--from-position", fmt.Sprint(a1.Position)}, "acc_b/account.created acc_a/billing.customer_linked acc_b/billing.customer_linked"},
		{[]string{"--type", "account.created,billing.customer_linked", "--account", "acc_a", "--limit", "1"}, "acc_a/account.created"},
	}
	for _, c := range cases {
		if got := describe(export(c.args...)); got != c.want {
			t.Errorf("export %v:\n got %s\nwant %s", c.args, got, c.want)
		}
	}
	// Positions increase in the exported (global) order.
	all := export()
	for i := 1; i < len(all); i++ {
		if all[i].Position <= all[i-1].Position {
			t.Errorf("positions out of order: %d after %d", all[i].Position, all[i-1].Position)
		}
	}
}

// An export never ends quietly short: while a transaction that was
// appending when it started holds back events committed before it
// started, it waits for it, and past --wait it exits non-zero naming it,
// after printing what it could.
func TestEventsExportWaitsForOpenAppender(t *testing.T) {
	pool, dsn := pgtest.NewPool(t)
	t.Setenv("TOLLGATE_DATABASE_URL", dsn)
	t.Setenv("TOLLGATE_CONFIG", "")
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, err := events.New(events.StreamAccount+"acc_a", events.AccountCreated{AccountID: "acc_a", Name: "A", Plan: "free"}, events.Metadata{AccountID: "acc_a"}, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, e.StreamID, 0, e); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // left open on purpose
	late, _ := events.New(events.StreamAccount+"acc_b", events.AccountCreated{AccountID: "acc_b", Name: "B", Plan: "free"}, events.Metadata{AccountID: "acc_b"}, time.Now(), "")
	if _, err := tx.Exec(ctx, `INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, occurred_at, account_id, data, metadata)
		VALUES ($1, $2, 1, $3, 1, $4, 'acc_b', $5::json, '{"account_id":"acc_b"}')`, late.EventID, late.StreamID, late.Type, late.OccurredAt, string(late.Data)); err != nil {
		t.Fatal(err)
	}
	// An event committed after the open appender began: the export must
	// print it, so it has to wait for the appender to end.
	after, _ := events.New(events.StreamAccount+"acc_c", events.AccountCreated{AccountID: "acc_c", Name: "C", Plan: "free"}, events.Metadata{AccountID: "acc_c"}, time.Now(), "")
	if _, err := store.Append(ctx, after.StreamID, 0, after); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"events", "export", "--wait", "300ms"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "waited") || !strings.Contains(err.Error(), "transaction") {
		t.Fatalf("export with an appender open: %v; want an error naming the transaction it waited for", err)
	}
	if n := strings.Count(stdout.String(), "\n"); n != 1 {
		t.Fatalf("export printed %d events before giving up, want the 1 committed before the open appender", n)
	}
}
