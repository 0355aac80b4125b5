package faults

import (
	"bufio"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/server"
)

// leasePieces are what the providers answer: valid JSON strings that are
// no ordinary text (NUL, lone surrogates, a pair split across chunks).
var leasePieces = []string{`"a\u0000b "`, `"\ud800 lone "`, `"\udc00 low "`, `"split \ud83d"`, `"\ude00 "`,
	`"\u00e9 \\ \" \/ "`, `"\u0000"`, `" w1"`, `" w2"`, `" w3"`, `" w4"`, `" w5"`, `" w6"`, `" w7"`, `" end"`}

// leaseStack is a whole Tollgate (every role) with a 1s lease and a reaper
// every 200ms, in front of providers that take three leases: "slow"
// answers after 3s, "drip" streams a chunk every 250ms, "refuse" answers
// 400 with a NUL in its message.
type leaseStack struct {
	t     *testing.T
	base  string
	key   string
	pool  *pgxpool.Pool
	slow  llmtest.Script
	drip  llmtest.Script
	calls func() int64
}

func startLeaseStack(t *testing.T, onExpired string, env ...string) *leaseStack {
	t.Helper()
	s := &leaseStack{t: t, slow: llmtest.Script{Pieces: leasePieces, Delay: 3 * time.Second},
		drip: llmtest.Script{Pieces: leasePieces, Gap: 250 * time.Millisecond}}
	slow, drip := llmtest.NewScripted(t, s.slow), llmtest.NewScripted(t, s.drip)
	refuse := llmtest.NewScripted(t, llmtest.Script{ErrorMessage: `"bad \u0000 input"`})
	s.calls = func() int64 { return slow.Calls() + drip.Calls() + refuse.Calls() }
	yaml := fmt.Sprintf(`
providers:
  - {name: slow, kind: openai, base_url: %q}
  - {name: drip, kind: openai, base_url: %q}
  - {name: refuse, kind: openai, base_url: %q}
models:
  - {name: slow, deployments: [{provider: slow, model: m}], price: {input_per_million: "1000", output_per_million: "2000"}}
  - {name: drip, deployments: [{provider: drip, model: m}], price: {input_per_million: "1000", output_per_million: "2000"}}
  - {name: refuse, deployments: [{provider: refuse, model: m}], price: {input_per_million: "1000", output_per_million: "2000"}}
plans: [{name: free}]
jobs: {lease: 1s, reaper_interval: 200ms, on_expired_lease: %s}
`, slow.URL, drip.URL, refuse.URL, onExpired)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	dbURL := pgtest.NewDatabase(t)
	vars := map[string]string{"TOLLGATE_DATABASE_URL": dbURL, "TOLLGATE_ADMIN_TOKEN": "admin-token-for-lease-tests", "TOLLGATE_INSTANCE_ID": "lease"}
	for i := 0; i+1 < len(env); i += 2 {
		vars[env[i]] = env[i+1]
	}
	getenv := func(k string) string { return vars[k] }
	cfg, err := config.Load(path, getenv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), server.Options{Config: cfg, Roles: server.AllRoles(), Listener: ln, Getenv: getenv,
		Logger: slog.New(slog.DiscardHandler), BusPollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if s.pool, err = pgxpool.New(context.Background(), dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	s.base = "http://" + srv.Addr
	_, acc := s.do("POST", "/v1/admin/accounts", "admin-token-for-lease-tests", `{"name":"lease","email":"lease@x.test","plan":"free"}`)
	_, k := s.do("POST", "/v1/admin/accounts/"+jsonField(t, acc, "id")+"/keys", "admin-token-for-lease-tests", `{"name":"k"}`)
	s.key = jsonField(t, k, "key")
	return s
}

// do sends a request and returns the status and the raw body.
func (s *leaseStack) do(method, path, token, body string, headers ...string) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, raw
}

func jsonField(t *testing.T, raw []byte, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	v, _ := m[field].(string)
	if v == "" {
		t.Fatalf("no %s in %s", field, raw)
	}
	return v
}

// rawContent returns the raw JSON of the first choice's message content
// in a chat.completion.
func rawContent(raw []byte) (string, error) {
	var r struct {
		Choices []struct {
			Message struct {
				Content json.RawMessage `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Choices) != 1 {
		return "", fmt.Errorf("not a one-choice chat.completion: %s (%v)", raw, err)
	}
	return string(r.Choices[0].Message.Content), nil
}

// stream sends a streamed request and returns the completion id, each
// content delta as raw JSON, and whether the stream ended in [DONE]
// without an error event.
func (s *leaseStack) stream(model string) (id string, deltas []string, clean bool, err error) {
	body := `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"go"}]}`
	req, _ := http.NewRequest("POST", s.base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(resp.Body)
		return "", nil, false, fmt.Errorf("stream: %d %s", resp.StatusCode, raw)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	clean = true
	done := false
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		if string(data) == "[DONE]" {
			done = true
			break
		}
		var ch struct {
			ID      string          `json:"id"`
			Error   json.RawMessage `json:"error"`
			Choices []struct {
				Delta struct {
					Content json.RawMessage `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(data, &ch); err != nil {
			return id, deltas, false, fmt.Errorf("event %s: %w", data, err)
		}
		if ch.Error != nil {
			clean = false
		}
		if ch.ID != "" {
			id = ch.ID
		}
		if len(ch.Choices) == 1 {
			if c := string(ch.Choices[0].Delta.Content); c != "" && c != `""` && c != "null" {
				deltas = append(deltas, c)
			}
		}
	}
	return id, deltas, clean && done, sc.Err()
}

// job reads GET /v1/jobs/{id}, waiting until it is finished.
func (s *leaseStack) job(id string) (status string, content string, err error) {
	st, raw := s.do("GET", "/v1/jobs/"+id+"?wait=30s", s.key, "")
	if st != 200 {
		return "", "", fmt.Errorf("job %s: %d %s", id, st, raw)
	}
	var j struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return "", "", err
	}
	if j.Response == nil {
		return j.Status, "", nil
	}
	content, err = rawContent(j.Response)
	return j.Status, content, err
}

// billed waits for the usage ledger to hold id and returns its rows and
// their cost.
func (s *leaseStack) billed(id string) (rows, cost int64) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := s.pool.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(cost_nano_usd), 0) FROM usage_ledger WHERE completion_id = $1`, id).
			Scan(&rows, &cost); err != nil {
			s.t.Fatal(err)
		}
		if rows > 0 || time.Now().After(deadline) {
			return rows, cost
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timeline counts the completion's events by type.
func (s *leaseStack) timeline(id string) map[string]int {
	s.t.Helper()
	st, raw := s.do("GET", "/v1/jobs/"+id+"/events", s.key, "")
	if st != 200 {
		s.t.Fatalf("timeline of %s: %d %s", id, st, raw)
	}
	var tl struct {
		Data []events.Envelope `json:"data"`
	}
	if err := json.Unmarshal(raw, &tl); err != nil {
		s.t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range tl.Data {
		out[e.Type]++
	}
	return out
}

// leaseResult is what the client saw of one request.
type leaseResult struct {
	mode, id string
	err      error
}

// load sends each sync, each streamed and each async request at once and
// returns what each client saw.
func (s *leaseStack) load(each int) []leaseResult {
	results := make(chan leaseResult, 3*each)
	var wg sync.WaitGroup
	want := s.slow.Content()
	for range each {
		wg.Add(3)
		go func() { // sync
			defer wg.Done()
			st, raw := s.do("POST", "/v1/chat/completions", s.key, `{"model":"slow","messages":[{"role":"user","content":"go"}]}`)
			var err error
			if st != 200 {
				err = fmt.Errorf("sync: %d %s", st, raw)
			} else if got, cerr := rawContent(raw); cerr != nil || got != want {
				err = fmt.Errorf("sync content %s (%v), want %s", got, cerr, want)
			}
			var m struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(raw, &m)
			results <- leaseResult{"sync", m.ID, err}
		}()
		go func() { // stream
			defer wg.Done()
			id, deltas, clean, err := s.stream("drip")
			if err == nil && (!clean || strings.Join(deltas, "|") != strings.Join(leasePieces, "|")) {
				err = fmt.Errorf("stream: clean %v, deltas %v, want %v", clean, deltas, leasePieces)
			}
			results <- leaseResult{"stream", id, err}
		}()
		go func() { // async
			defer wg.Done()
			st, raw := s.do("POST", "/v1/chat/completions", s.key, `{"model":"slow","messages":[{"role":"user","content":"go"}]}`, "Prefer", "respond-async")
			var m struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(raw, &m)
			var err error
			if st != http.StatusAccepted {
				err = fmt.Errorf("async: %d %s", st, raw)
			}
			results <- leaseResult{"async", m.ID, err}
		}()
	}
	wg.Wait()
	close(results)
	var out []leaseResult
	for r := range results {
		out = append(out, r)
	}
	return out
}

// Sync, streamed and async requests that each take three leases, with
// NUL and lone surrogates in the provider's answer, through the HTTP API:
// every one answered in full, recorded with the provider's exact bytes,
// billed exactly once in the usage ledger, never abandoned.
func TestLongRequestsWithHostileContentAreAnsweredAndBilledOnce(t *testing.T) {
	// Not parallel: its 1s lease must be renewed in time, which CPU taken
	// by the other tests can delay.
	for _, onExpired := range []string{config.OnExpiredAbandon, config.OnExpiredRetry} {
		t.Run(onExpired, func(t *testing.T) { testLongRequests(t, onExpired) })
	}
}

// testLongRequests runs the scenario with jobs.on_expired_lease onExpired:
// with retry, a live executor's job must not be requeued either (the
// provider is called once per request).
func testLongRequests(t *testing.T, onExpired string) {
	s := startLeaseStack(t, onExpired)
	want := s.slow.Content()
	var tried, held, lost, duplicated int
	for _, r := range s.load(2) {
		tried++
		if r.err != nil || r.id == "" {
			t.Errorf("%s %s: %v", r.mode, r.id, r.err)
			lost++
			continue
		}
		status, content, err := s.job(r.id)
		if err != nil || status != "succeeded" || content != want {
			t.Errorf("%s %s: job %s, content %s (%v), want succeeded with %s", r.mode, r.id, status, content, err, want)
			lost++
			continue
		}
		tl := s.timeline(r.id)
		rows, cost := s.billed(r.id)
		switch {
		case rows > 1 || tl[events.TypeCompletionSucceeded] > 1:
			duplicated++
			t.Errorf("%s %s: billed %d times (timeline %v)", r.mode, r.id, rows, tl)
		case rows != 1 || cost == 0 || tl[events.TypeCompletionAbandoned] != 0 || tl[events.TypeCompletionRequeued] != 0 ||
			tl[events.TypeCompletionLeaseRenewed] == 0:
			lost++
			t.Errorf("%s %s: ledger rows %d cost %d, timeline %v", r.mode, r.id, rows, cost, tl)
		default:
			held++
		}
	}
	t.Logf("long requests with hostile content, on_expired_lease %s: tried %d, held %d, lost %d, duplicated %d; provider calls %d", onExpired, tried, held, lost, duplicated, s.calls())
	if s.calls() != int64(tried) {
		t.Errorf("provider called %d times for %d requests", s.calls(), tried)
	}
	s.checkRefusal()
}

// A synchronous request that outlives its response deadline (1s here)
// gets 202 and its job; the job, three leases long, succeeds with the
// provider's exact bytes and is billed once.
func TestSyncPastItsResponseDeadlineSucceedsAsAJob(t *testing.T) {
	// Not parallel: its 1s lease must be renewed in time, which CPU taken
	// by the other tests can delay.
	s := startLeaseStack(t, config.OnExpiredAbandon, "TOLLGATE_RESPONSE_DEADLINE", "1s")
	st, raw := s.do("POST", "/v1/chat/completions", s.key, `{"model":"slow","messages":[{"role":"user","content":"go"}]}`)
	if st != http.StatusAccepted {
		t.Fatalf("past the deadline: %d %s, want 202", st, raw)
	}
	id := jsonField(t, raw, "id")
	status, content, err := s.job(id)
	if err != nil || status != "succeeded" || content != s.slow.Content() {
		t.Fatalf("job %s: %s %s (%v), want succeeded with %s", id, status, content, err, s.slow.Content())
	}
	if rows, cost := s.billed(id); rows != 1 || cost == 0 {
		t.Fatalf("ledger rows %d, cost %d", rows, cost)
	}
	if tl := s.timeline(id); tl[events.TypeCompletionLeaseRenewed] == 0 || tl[events.TypeCompletionAbandoned] != 0 {
		t.Fatalf("timeline %v", tl)
	}
}

// checkRefusal sends a request the provider refuses with a NUL in its
// words: the client gets them, and the jobs list (the read model) keeps
// them exactly.
func (s *leaseStack) checkRefusal() {
	t := s.t
	t.Helper()
	st, raw := s.do("POST", "/v1/chat/completions", s.key, `{"model":"refuse","messages":[{"role":"user","content":"go"}]}`)
	var refusal struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &refusal); err != nil || st != 400 || refusal.Error.Message != "bad \x00 input" {
		t.Fatalf("refusal: %d %s", st, raw)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, list := s.do("GET", "/v1/jobs?limit=100", s.key, "")
		if bytes.Contains(list, []byte(`"bad \u0000 input"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the jobs list never showed the refusal: %s", list)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
