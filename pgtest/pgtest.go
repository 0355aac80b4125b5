// Package pgtest gives each test run a PostgreSQL database of its own,
// migrated, and drops it afterwards. The servers are shared (with CI and
// other sessions), so nothing is ever created in a fixed database; the
// one database of a fixed name is the migrated template NewPool copies
// (tollgate_template_<hash of the migrations>), built once per set of
// migrations and never written afterwards.
//
// The server comes from TOLLGATE_TEST_DATABASE_URL (default
// postgres://127.0.0.1:5432/postgres). When it cannot be reached the test
// fails with how to start it; it never skips.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events/pgstore"
)

// ServerURL returns the admin URL of the test server.
func ServerURL() string {
	if u := os.Getenv("TOLLGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://127.0.0.1:5432/postgres?sslmode=disable"
}

// HowToStart is appended to connection failures.
const HowToStart = `PostgreSQL is needed at 127.0.0.1:5432 (or TOLLGATE_TEST_DATABASE_URL); start it with:
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`

// NewDatabase creates an empty database, registers its drop with t.Cleanup
// and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, "")
}

// newDatabase creates a database (a copy of template unless it is empty),
// registers its drop with t.Cleanup and returns its URL.
func newDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v\n%s", err, HowToStart)
	}
	defer admin.Close(ctx)
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "tollgate_test_" + hex.EncodeToString(b)
	create := "CREATE DATABASE " + name
	if template != "" {
		create += " TEMPLATE " + template
	}
	if _, err := admin.Exec(ctx, create); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("parse %s: %v", ServerURL(), err)
	}
	u.Path = "/" + name
	return u.String()
}

// NewPool creates a migrated database and returns a pool on it, closed at
// the end of the test. The database is a copy of a template migrated once
// (see migratedTemplate), and Migrate then finds nothing left to apply.
func NewPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	tmpl, err := migratedTemplate()
	if err != nil {
		t.Fatal(err)
	}
	dsn := newDatabase(t, tmpl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool, dsn
}

// HoldWriteTransaction opens a transaction on dsn that has written a row
// (so it has a transaction id, and is in every snapshot of the server
// until it ends) and keeps it open until the test ends: the long-running
// transaction of another tenant on a busy shared server.
func HoldWriteTransaction(t testing.TB, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v\n%s", err, HowToStart)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS tollgate_test_busy (x int)`); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, `INSERT INTO tollgate_test_busy VALUES (1)`); err != nil {
		t.Fatal(err)
	}
}
