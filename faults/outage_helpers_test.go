package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/redistest"
	"github.com/tollgate/tollgate/server"
)

const outageAdmin = "admin-token-for-outage-faults"

// outageLogInterval is the servers' outage log interval in these tests.
const outageLogInterval = 2 * time.Second

// outageConfig: the echo model, limits no test reaches, and the default
// on_expired_lease (abandon) with a lease (outageLease) longer than each
// outage: a worker that loses the database while claiming a job or
// recording its outcome resolves the append (reads the stream again,
// appends again while its lease lasts), so a queued job is not abandoned
// when the database comes back within the lease. (With a 3s lease, an
// async job in flight when the database went was abandoned about once in
// fifteen runs: its lease ran out during the outage, as abandon says.)
const outageConfig = `
providers: [{name: echo, kind: echo}]
models:
  - name: echo
    deployments: [{provider: echo, model: echo}]
    price: {input_per_million: "0.50", output_per_million: "1.50"}
plans: [{name: free, requests_per_minute: 1000000, tokens_per_minute: 1000000000}]
jobs: {lease: %s, reaper_interval: 500ms}
`

// outageLease is the jobs' lease in these tests: the longest outage (the
// pause) and 4s, the time an executor may take to see the database back
// (its resolution's backoff reaches 2s, and a connection attempt in
// flight at the resume may take its 2s connect_timeout): 12s by default.
// It holds only for one outage at a time; see drainQueued.
func outageLease() time.Duration { return pauseWindow + 4*time.Second }

// outageRecord is one log record the server wrote.
type outageRecord struct {
	at    time.Time
	level slog.Level
	msg   string
	attrs string
}

// outageLog captures the server's log records (every level) in memory.
type outageLog struct {
	mu   sync.Mutex
	recs []outageRecord
}

type outageLogHandler struct {
	log   *outageLog
	attrs []slog.Attr
}

func (h outageLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h outageLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	for _, a := range h.attrs {
		fmt.Fprintf(&b, "%s=%v ", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, "%s=%v ", a.Key, a.Value); return true })
	h.log.mu.Lock()
	h.log.recs = append(h.log.recs, outageRecord{at: time.Now(), level: r.Level, msg: r.Message, attrs: b.String()})
	h.log.mu.Unlock()
	return nil
}

func (h outageLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return outageLogHandler{log: h.log, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h outageLogHandler) WithGroup(string) slog.Handler { return h }

// warnings returns the warning and error records written in [from, to).
func (l *outageLog) warnings(from, to time.Time) []outageRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []outageRecord
	for _, r := range l.recs {
		if r.level >= slog.LevelWarn && !r.at.Before(from) && r.at.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// naming returns the records (every level) whose attributes name id.
func (l *outageLog) naming(id string) []outageRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []outageRecord
	for _, r := range l.recs {
		if strings.Contains(r.attrs, id) {
			out = append(out, r)
		}
	}
	return out
}

// suppressedCount sums the suppressed attribute of recs: the lines the
// outage log dropped and counted.
func suppressedCount(recs []outageRecord) int {
	n := 0
	for _, r := range recs {
		if i := strings.Index(r.attrs, "suppressed="); i >= 0 {
			var v int
			if _, err := fmt.Sscanf(r.attrs[i:], "suppressed=%d", &v); err == nil {
				n += v
			}
		}
	}
	return n
}

// outageSummary counts records by message.
func outageSummary(recs []outageRecord) string {
	n := map[string]int{}
	for _, r := range recs {
		n[r.level.String()+" "+r.msg]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%dx %q; ", n[k], k)
	}
	return b.String()
}

// outageEnv is one Tollgate (every role, in process) on a private
// PostgreSQL cluster, optionally with a private Redis.
type outageEnv struct {
	t     *testing.T
	pg    *pgtest.Cluster
	dsn   string
	redis *redistest.Server
	srv   *server.Server
	base  string
	log   *outageLog
}

func outageStart(t *testing.T, withRedis bool) *outageEnv {
	t.Helper()
	e := &outageEnv{t: t, log: &outageLog{}}
	// A commit Tollgate was told of must survive the crash the test
	// makes: pgtest's clusters turn synchronous_commit off for speed,
	// which loses the last commits of an immediate stop.
	e.pg = pgtest.StartCluster(t, pgtest.ClusterOptions{Settings: []string{"synchronous_commit = on"}})
	// Short bounds, so that a paused server fails requests within the
	// outage: connect_timeout here, Options.QueryTimeout below.
	e.dsn = e.pg.CreateDatabase("tollgate") + "&connect_timeout=2"
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, outageConfig, outageLease()), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"TOLLGATE_DATABASE_URL": e.dsn, "TOLLGATE_ADMIN_TOKEN": outageAdmin, "TOLLGATE_INSTANCE_ID": "outage",
	}
	if withRedis {
		e.redis = redistest.Start(t)
		vars["TOLLGATE_REDIS_URL"] = e.redis.URL()
	}
	cfg, err := config.Load(path, func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.srv, err = server.Start(ctx, server.Options{
		Config: cfg, Roles: server.AllRoles(), Listener: ln, MaxDBConns: 10,
		Logger: slog.New(outageLogHandler{log: e.log}), OutageLogInterval: outageLogInterval,
		BusPollInterval: 50 * time.Millisecond, QueryTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.srv.Close(ctx)
	})
	e.base = "http://" + e.srv.Addr
	return e
}

var outageHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// outageResponse is what one request got.
type outageResponse struct {
	status     int
	retryAfter string
	typ, code  string
	id         string
	body       string
	err        error
}

func (e *outageEnv) do(method, path, token string, body any) outageResponse {
	var buf bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&buf).Encode(body)
	}
	async := strings.HasPrefix(path, "async:")
	req, err := http.NewRequest(method, e.base+strings.TrimPrefix(path, "async:"), &buf)
	if err != nil {
		return outageResponse{err: err}
	}
	if async {
		req.Header.Set("Prefer", "respond-async")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := outageHTTP.Do(req)
	if err != nil {
		return outageResponse{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	out := outageResponse{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: string(b), err: err}
	var v struct {
		ID    string `json:"id"`
		Error *struct {
			Type string  `json:"type"`
			Code *string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &v) == nil {
		out.id = v.ID
		if v.Error != nil {
			out.typ = v.Error.Type
			if v.Error.Code != nil {
				out.code = *v.Error.Code
			}
		}
	}
	return out
}

// account opens an account and returns its id and a key, retrying while
// the server warms up.
func (e *outageEnv) account() (string, string) {
	e.t.Helper()
	r := e.do("POST", "/v1/admin/accounts", outageAdmin, map[string]string{"name": "Outage", "plan": "free"})
	if r.status != http.StatusCreated {
		e.t.Fatalf("create account: %d %s %v", r.status, r.body, r.err)
	}
	acc := r.id
	r = e.do("POST", "/v1/admin/accounts/"+acc+"/keys", outageAdmin, map[string]string{"name": "k"})
	var key struct{ Key string }
	if r.status != http.StatusCreated || json.Unmarshal([]byte(r.body), &key) != nil {
		e.t.Fatalf("create key: %d %s %v", r.status, r.body, r.err)
	}
	return acc, key.Key
}

// readyz returns /readyz's status and each dependency's state.
func (e *outageEnv) readyz() (int, map[string]string) {
	res, err := outageHTTP.Get(e.base + "/readyz")
	if err != nil {
		e.t.Fatalf("readyz: %v", err)
	}
	defer res.Body.Close()
	var v struct {
		Status       string `json:"status"`
		Dependencies map[string]struct {
			Status string `json:"status"`
		} `json:"dependencies"`
	}
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		e.t.Fatalf("readyz body: %v", err)
	}
	out := map[string]string{"": v.Status}
	for k, d := range v.Dependencies {
		out[k] = d.Status
	}
	return res.StatusCode, out
}

// outageResult is one request of the load.
type outageResult struct {
	at, done time.Time
	outageResponse
}

// outageLoad sends chat requests from a few goroutines, each pausing
// between requests, until stopped.
type outageLoad struct {
	e    *outageEnv
	key  string
	mu   sync.Mutex
	res  []outageResult
	stop chan struct{}
	wg   sync.WaitGroup
}

func (e *outageEnv) startLoad(key string, workers int) *outageLoad {
	l := &outageLoad{e: e, key: key, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				at := time.Now()
				path := "/v1/chat/completions"
				if w == 0 {
					// One worker queues its requests: they go through the
					// relay, the bus and the worker pool.
					path = "async:" + path
				}
				r := e.do("POST", path, key, map[string]any{
					"model": "echo", "messages": []map[string]string{{"role": "user", "content": fmt.Sprintf("worker %d request %d", w, i)}}})
				l.mu.Lock()
				l.res = append(l.res, outageResult{at: at, done: time.Now(), outageResponse: r})
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *outageLoad) finish() []outageResult {
	close(l.stop)
	l.wg.Wait()
	return l.results()
}

func (l *outageLoad) results() []outageResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outageResult(nil), l.res...)
}

// waitOK waits until a request sent at or after since got a 200, and
// returns when it was sent.
func (l *outageLoad) waitOK(t *testing.T, since time.Time, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		for _, r := range l.results() {
			if (r.status == http.StatusOK || r.status == http.StatusAccepted) && !r.at.Before(since) {
				return r.at
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no request succeeded within %s of the dependency's return", limit)
	return time.Time{}
}

// outageCounts are the figures of one window of the load.
type outageCounts struct {
	tried, ok, unavailable, other int
	others                        []string
	// slowest is the longest a request waited for its answer.
	slowest time.Duration
}

// countResults counts the requests sent in [from, to).
func countResults(res []outageResult, from, to time.Time) outageCounts {
	return countWhere(res, func(r outageResult) bool { return !r.at.Before(from) && r.at.Before(to) })
}

// countAnswered counts the requests sent and answered in [from, to).
func countAnswered(res []outageResult, from, to time.Time) outageCounts {
	return countWhere(res, func(r outageResult) bool { return !r.at.Before(from) && r.done.Before(to) })
}

func countWhere(res []outageResult, in func(outageResult) bool) outageCounts {
	var c outageCounts
	for _, r := range res {
		if !in(r) {
			continue
		}
		c.tried++
		c.slowest = max(c.slowest, r.done.Sub(r.at))
		switch r.status {
		case http.StatusOK, http.StatusAccepted:
			c.ok++
		case http.StatusServiceUnavailable:
			c.unavailable++
		default:
			c.other++
			if len(c.others) < 5 {
				c.others = append(c.others, fmt.Sprintf("%d %s %v", r.status, r.body, r.err))
			}
		}
	}
	return c
}

// checkUnavailable checks every 503 of res: Retry-After, an OpenAI body
// of type server_error, and one of codes.
func checkUnavailable(t *testing.T, res []outageResult, codes ...string) {
	t.Helper()
	bad := 0
	for _, r := range res {
		if r.status != http.StatusServiceUnavailable {
			continue
		}
		ok := r.retryAfter != "" && r.typ == "server_error"
		found := false
		for _, c := range codes {
			found = found || r.code == c
		}
		if !ok || !found {
			if bad++; bad <= 3 {
				t.Errorf("503 without Retry-After or an OpenAI body naming %v: Retry-After %q, %s", codes, r.retryAfter, r.body)
			}
		}
	}
}
