package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/schemas"
)

// templateLock is the advisory lock (on the server's admin database)
// held while a template is checked or built.
const templateLock = 0x7467_7465_6d70 // "tgtemp"

// template is this process's migrated template database (see
// migratedTemplate).
var template struct {
	once sync.Once
	name string
	err  error
}

// migratedTemplate returns the name of a database migrated with the
// migrations compiled into this binary, marked as a template, from which
// NewPool copies each test's database instead of migrating it again. Its
// name carries a hash of the migrations ("tollgate_template_<hash>"), so
// it is built once per set of migrations on the server and shared by
// every test process that has the same ones; nothing connects to it
// after it is built (a copy needs its template unused).
func migratedTemplate() (string, error) {
	template.once.Do(func() { template.name, template.err = buildTemplate() })
	return template.name, template.err
}

func buildTemplate() (string, error) {
	sum, err := migrationsHash()
	if err != nil {
		return "", err
	}
	name := "tollgate_template_" + sum
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL: %w\n%s", err, HowToStart)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(templateLock)); err != nil {
		return "", fmt.Errorf("template lock: %w", err)
	}
	defer admin.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(templateLock)) //nolint:errcheck // the session ends right after
	var ready bool
	err = admin.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, name).Scan(&ready)
	switch {
	case err == nil && ready:
		return name, nil
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	// Absent, or left half-built by a process that died: build it.
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop half-built template %s: %w", name, err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create template %s: %w", name, err)
	}
	u, err := url.Parse(ServerURL())
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", ServerURL(), err)
	}
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		return "", fmt.Errorf("template pool: %w", err)
	}
	_, err = pgstore.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrate template %s: %w", name, err)
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+name+" IS_TEMPLATE true"); err != nil {
		return "", fmt.Errorf("mark template %s: %w", name, err)
	}
	return name, nil
}

// migrationsHash is a short hash of the migrations' names and contents.
func migrationsHash() (string, error) {
	names, err := fs.Glob(schemas.Migrations, "migrations/*.sql")
	if err != nil {
		return "", fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(schemas.Migrations, n)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", n, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
