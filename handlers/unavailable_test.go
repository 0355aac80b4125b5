package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/quota"
	quotaredis "github.com/tollgate/tollgate/quota/redis"
)

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestUnavailableClassifiesRealErrors classifies the errors the drivers
// really return when their server is gone, and leaves others alone.
func TestUnavailableClassifiesRealErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pgErr := pgx.Connect(ctx, "postgres://postgres@"+closedPort(t)+"/x?sslmode=disable&connect_timeout=2")
	rdb := redis.NewClient(&redis.Options{Addr: closedPort(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	_, redisErr := quotaredis.New(rdb, "tollgate:test:", nil).Admit(ctx, quota.Admission{ID: "c", AccountID: "a", KeyID: "k",
		Account: quota.Unlimited(), Key: quota.Unlimited(), Now: time.Now(), TTL: time.Minute})
	if pgErr == nil || redisErr == nil {
		t.Fatalf("want errors from closed ports, got %v / %v", pgErr, redisErr)
	}
	for _, c := range []struct {
		name string
		err  error
		dep  Dependency
	}{
		{"pgx connect refused", fmt.Errorf("load key: %w", pgErr), DependencyDatabase},
		{"redis dial refused", redisErr, DependencyRedis},
		{"limiter seeding from a database that is down", fmt.Errorf("%w: seed acc: %w", quota.ErrLimiter, pgErr), DependencyDatabase},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, DependencyDatabase},
		{"starting up", fmt.Errorf("q: %w", &pgconn.PgError{Code: "57P03"}), DependencyDatabase},
		{"connection exception", &pgconn.PgError{Code: "08006"}, DependencyDatabase},
		{"too many connections", &pgconn.PgError{Code: "53300"}, DependencyDatabase},
		{"pool acquire timeout", fmt.Errorf("acquire: %w", context.DeadlineExceeded), DependencyDatabase},
		{"connection reset", fmt.Errorf("read: %w", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}), DependencyDatabase},
		{"conn closed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), DependencyDatabase},
		{"unexpected EOF", fmt.Errorf("x: %w", io.ErrUnexpectedEOF), DependencyDatabase},
	} {
		if dep, ok := Unavailable(c.err); !ok || dep != c.dep {
			t.Errorf("%s (%v): %q %v, want %q", c.name, c.err, dep, ok, c.dep)
		}
		ae := toAPIError(c.err)
		want := map[Dependency]string{DependencyDatabase: "database_unavailable", DependencyRedis: "quota_unavailable"}[c.dep]
		if ae.Status != http.StatusServiceUnavailable || ae.Code != want || ae.Type != "server_error" || ae.Header["Retry-After"] != "2" {
			t.Errorf("%s: %+v, want 503 %s with Retry-After", c.name, ae, want)
		}
	}
	for _, err := range []error{
		nil, errors.New("boom"), domainerr.ErrNotFound, &pgconn.PgError{Code: "23505"}, &pgconn.PgError{Code: "22P05"},
		context.Canceled, fmt.Errorf("x: %w", domainerr.ErrInvalid),
	} {
		if dep, ok := Unavailable(err); ok {
			t.Errorf("%v: classified %q, want not an outage", err, dep)
		}
	}
}

func TestUnavailableResponseIsAnOpenAIError(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	writeError(rec, toAPIError(fmt.Errorf("append: %w", &pgconn.PgError{Code: "57P01"})))
	var body struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 503 || rec.Header().Get("Retry-After") != "2" ||
		body.Error.Type != "server_error" || body.Error.Code == nil || *body.Error.Code != "database_unavailable" || body.Error.Message == "" {
		t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// countingHandler counts what reaches it.
type countingHandler struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r)
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

func TestOutageLogSaysItOncePerInterval(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var recs []slog.Record
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := NewOutageLogHandler(countingHandler{mu: &mu, recs: &recs}, 10*time.Second, clock)
	if NewOutageLogHandler(h, time.Second, nil) != h {
		t.Error("wrapping an outage handler again made a second one")
	}
	log := slog.New(h).With("component", "api")
	down := fmt.Errorf("append: %w", &pgconn.PgError{Code: "57P01"})
	for i := range 1000 {
		log.Error("request failed", "correlation_id", i, "error", down)
		log.Info("http request", "status", 503) // not an error: always passes
	}
	log.Error("request failed", "error", errors.New("a bug")) // not an outage: passes
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	log.Error("request failed", "error", down)
	log.WithGroup("g").Warn("relay", slog.Group("x", slog.Any("err", fmt.Errorf("%w: admit", quota.ErrLimiter))))

	mu.Lock()
	defer mu.Unlock()
	var outage, info, other int
	var suppressed []int64
	for _, r := range recs {
		switch {
		case r.Level == slog.LevelInfo:
			info++
		default:
			var dep string
			r.Attrs(func(a slog.Attr) bool {
				switch a.Key {
				case "dependency":
					dep = a.Value.String()
				case "suppressed":
					suppressed = append(suppressed, a.Value.Int64())
				}
				return true
			})
			if dep != "" {
				outage++
			} else {
				other++
			}
		}
	}
	if info != 1000 || other != 1 || outage != 3 || len(suppressed) != 3 || suppressed[0] != 0 || suppressed[1] != 999 || suppressed[2] != 0 {
		t.Fatalf("info %d other %d outage %d suppressed %v; want 1000, 1, 3 (1st, after the interval with 999 suppressed, Redis), [0 999 0]",
			info, other, outage, suppressed)
	}
}

func TestReadyzNamesEveryDependency(t *testing.T) {
	t.Parallel()
	var redisDown bool
	var mu sync.Mutex
	r := mux.NewRouter()
	OpsRoutes(r, prometheus.NewRegistry(), []ReadyCheck{
		{Name: "database", Check: func(context.Context) error { return nil }},
		{Name: "bus", Check: func(context.Context) error { return nil }},
		{Name: "redis", Check: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if redisDown {
				return errors.New("dial tcp 127.0.0.1:6390: connect: connection refused")
			}
			return nil
		}},
	})
	get := func() (int, string, map[string]any) {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return rec.Code, rec.Header().Get("Retry-After"), v
	}
	code, _, v := get()
	deps, _ := v["dependencies"].(map[string]any)
	if code != 200 || v["status"] != "ready" || len(deps) != 3 {
		t.Fatalf("all up: %d %v", code, v)
	}
	mu.Lock()
	redisDown = true
	mu.Unlock()
	code, retry, v := get()
	deps, _ = v["dependencies"].(map[string]any)
	rd, _ := deps["redis"].(map[string]any)
	db, _ := deps["database"].(map[string]any)
	if code != 503 || retry == "" || v["status"] != "unavailable" || rd["status"] != "down" || rd["error"] == "" || db["status"] != "up" {
		t.Fatalf("redis down: %d %v", code, v)
	}
}
